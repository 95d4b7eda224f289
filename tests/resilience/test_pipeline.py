from __future__ import annotations

import asyncio
import random

import pytest

import firebreak as fb
from firebreak.testing import FakeClock


async def test_attempt_timeout_is_retried_then_succeeds(clock: FakeClock) -> None:
    durations = iter([30, 30, 1])

    async def model() -> str:
        await clock.sleep(next(durations))
        return "answer"

    policy = fb.Pipeline(
        retry=fb.Retry(attempts=3, base=1, cap=1, clock=clock, rng=random.Random(1)),
        attempt_timeout=10,
        timeout=60,
        clock=clock,
    )
    assert await policy.call(model) == "answer"
    assert 21 <= clock.now() <= 23  # two 10 s timeouts, two short backoffs, 1 s call


async def test_every_attempt_passes_the_breaker_and_an_open_circuit_stops_retries(
    clock: FakeClock,
) -> None:
    calls = 0

    async def down() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionError

    breaker = fb.CircuitBreaker("svc", clock=clock, consecutive_failures=2)
    policy = fb.Pipeline(
        retry=fb.Retry(attempts=5, base=0.1, clock=clock), breaker=breaker, clock=clock
    )
    with pytest.raises(fb.CircuitOpenError):
        await policy.call(down)
    assert calls == 2  # the third attempt met an open circuit and was not retried
    assert breaker.state == "open"


async def test_total_timeout_bounds_attempts_and_backoff(clock: FakeClock) -> None:
    async def slow() -> None:
        await clock.sleep(100)

    policy = fb.Pipeline(
        retry=fb.Retry(attempts=50, base=1, cap=1, clock=clock),
        attempt_timeout=5,
        timeout=12,
        clock=clock,
    )
    with pytest.raises(TimeoutError):
        await policy.call(slow)
    assert clock.now() <= 12


async def test_fallback_catches_a_shed_call(clock: FakeClock) -> None:
    gate = asyncio.Event()

    async def work() -> str:
        await gate.wait()
        return "primary"

    async def cached() -> str:
        return "cached"

    policy = fb.Pipeline(
        fallback=fb.Fallback(cached), bulkhead=fb.Bulkhead("b", limit=1, clock=clock), clock=clock
    )
    first = asyncio.create_task(policy.call(work))
    await asyncio.sleep(0)
    assert await policy.call(work) == "cached"
    gate.set()
    assert await first == "primary"


async def test_bulkhead_holds_its_slot_across_retries(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("b", limit=1, clock=clock)
    attempts = 0

    async def flaky() -> str:
        nonlocal attempts
        attempts += 1
        assert bulkhead.active == 1
        if attempts < 3:
            raise ConnectionError
        return "ok"

    policy = fb.Pipeline(bulkhead=bulkhead, retry=fb.Retry(attempts=3, clock=clock), clock=clock)
    assert await policy.call(flaky) == "ok"
    assert bulkhead.active == 0


async def test_decorator_keeps_the_function_identity(clock: FakeClock) -> None:
    @fb.Pipeline(retry=fb.Retry(clock=clock), attempt_timeout=1, clock=clock)
    async def ping(host: str) -> str:
        """Ping a host."""
        return host

    assert await ping("a") == "a"
    assert ping.__name__ == "ping"
    assert ping.__doc__ == "Ping a host."


async def test_an_empty_pipeline_is_the_bare_call() -> None:
    async def f(x: int) -> int:
        return x * 2

    assert await fb.Pipeline().call(f, 21) == 42
