"""Property-based tests of the breaker state machine and the backoff schedule."""

from __future__ import annotations

import asyncio
import random

from hypothesis import given, settings
from hypothesis import strategies as st

import firebreak as fb
from firebreak.testing import FakeClock


@given(
    base=st.floats(0, 10),
    extra=st.floats(0, 100),
    retry=st.integers(1, 60),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_always_within_zero_and_the_capped_exponential(
    base: float, extra: float, retry: int, seed: int
) -> None:
    cap = base + extra
    policy = fb.Retry(attempts=61, base=base, cap=cap, rng=random.Random(seed))
    delay = policy.backoff(retry)
    assert 0 <= delay <= min(cap, base * 2 ** (retry - 1)) + 1e-9


@given(attempts=st.integers(1, 8), failures=st.integers(0, 12), seed=st.integers(0, 1000))
@settings(max_examples=60, deadline=None)
def test_retry_calls_at_most_attempts_times_and_succeeds_iff_it_can(
    attempts: int, failures: int, seed: int
) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls <= failures:
            raise ConnectionError
        return "ok"

    async def main() -> bool:
        clock = FakeClock()
        policy = fb.Retry(attempts=attempts, clock=clock, rng=random.Random(seed))
        try:
            await policy.call(flaky)
        except ConnectionError:
            return False
        return True

    succeeded = asyncio.run(main())
    assert calls == min(attempts, failures + 1)
    assert succeeded == (failures < attempts)


# One operation of the breaker model: advance time, then one call's outcome.
op = st.tuples(st.floats(0, 20), st.sampled_from(["ok", "fail", "slow", "cancel"]))


@given(ops=st.lists(op, max_size=80), probes=st.integers(1, 3), consecutive=st.booleans())
@settings(max_examples=150, deadline=None)
def test_breaker_state_machine_invariants(
    ops: list[tuple[float, str]], probes: int, consecutive: bool
) -> None:
    """Whatever the sequence of outcomes and delays:

    - a call is admitted only when closed, or as one of at most `probes` leases in
      half-open; an open breaker admits nothing;
    - every rejection carries a non-negative retry_after;
    - the breaker only opens on a failure or slow call, and only closes after a probe
      succeeded;
    - cancellation never changes the state.
    """

    async def main() -> None:
        clock = FakeClock(autojump=False)
        br = fb.CircuitBreaker(
            "prop",
            clock=clock,
            rng=random.Random(0),
            minimum_calls=3,
            consecutive_failures=2 if consecutive else None,
            slow_call_duration=1.0,
            slow_call_rate=0.5,
            half_open_probes=probes,
            open_duration=5,
        )
        for delay, outcome in ops:
            clock.advance(delay)
            before = br.state
            admitted = False

            async def call(outcome: str = outcome) -> None:
                nonlocal admitted
                admitted = True
                if outcome == "fail":
                    raise ConnectionError
                if outcome == "slow":
                    clock.advance(2)
                if outcome == "cancel":
                    raise asyncio.CancelledError

            try:
                await br.call(call)
            except fb.CircuitOpenError as exc:
                assert before != "closed"
                assert exc.retry_after is None or exc.retry_after >= 0
            except (ConnectionError, asyncio.CancelledError):
                pass
            after = br.state
            if before == "open":
                assert not admitted
            if admitted and before != after:
                if after == "open":
                    assert outcome in {"fail", "slow"}
                if after == "closed":
                    assert before == "half_open"
                    assert outcome in {"ok", "slow"}
            if outcome == "cancel" and admitted:
                assert after == before

    asyncio.run(main())
