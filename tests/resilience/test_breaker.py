from __future__ import annotations

import asyncio
import random

import pytest

import firebreak as fb
from firebreak.events import BreakerStateChanged, CallRejected
from firebreak.testing import FakeClock, capture_events


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise ConnectionError("service down")


def breaker(clock: FakeClock, **options: object) -> fb.CircuitBreaker:
    defaults: dict[str, object] = {"minimum_calls": 4, "failure_rate": 0.5, "open_jitter": 0.0}
    defaults.update(options)
    return fb.CircuitBreaker("svc", clock=clock, rng=random.Random(1), **defaults)


async def fail(br: fb.CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await br.call(down)


async def test_closed_breaker_passes_calls_through(clock: FakeClock) -> None:
    br = breaker(clock)
    assert await br.call(ok) == "ok"
    assert br.state == "closed"


async def test_opens_when_failure_rate_reaches_threshold_over_minimum_calls(
    clock: FakeClock,
) -> None:
    br = breaker(clock)
    await br.call(ok)
    await br.call(ok)
    await fail(br, 1)
    assert br.state == "closed"  # 1 of 3: under the minimum number of calls
    with capture_events() as seen:
        await fail(br, 1)  # 2 of 4 = 50 %
    assert br.state == "open"
    change = next(e for e in seen if isinstance(e, BreakerStateChanged))
    assert (change.old, change.new) == ("closed", "open")
    assert "failure rate" in change.reason


async def test_the_callers_deadline_running_out_is_not_the_services_failure(
    clock: FakeClock,
) -> None:
    """`DeadlineExceeded` (the run or an outer block had no time left, maybe before the
    call even began) counts neither way; the attempt's own timeout does count."""
    br = breaker(clock, consecutive_failures=2)

    async def out_of_time() -> str:
        raise fb.DeadlineExceeded("the run's deadline passed", timeout=0.0)

    async def too_slow() -> str:
        raise fb.StepTimeout("no answer in 5 s", timeout=5.0)

    for _ in range(5):
        with pytest.raises(fb.DeadlineExceeded):
            await br.call(out_of_time)
    assert br.state == "closed"
    for _ in range(2):
        with pytest.raises(fb.StepTimeout):
            await br.call(too_slow)
    assert br.state == "open"


async def test_failure_rate_below_threshold_keeps_it_closed(clock: FakeClock) -> None:
    br = breaker(clock)
    for _ in range(30):
        await br.call(ok)
        await br.call(ok)
        await fail(br, 1)  # 33 %
    assert br.state == "closed"


async def test_old_failures_slide_out_of_the_window(clock: FakeClock) -> None:
    br = breaker(clock, window=10, buckets=10)
    await fail(br, 3)
    clock.advance(11)  # those three are now outside the window
    for _ in range(4):
        await br.call(ok)
    await fail(br, 1)
    assert br.state == "closed"  # 1 of 5 in the window


async def test_open_breaker_rejects_at_once_with_retry_after(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5)
    await fail(br, 1)
    calls = 0

    async def counted() -> None:
        nonlocal calls
        calls += 1

    clock.advance(2)
    with capture_events() as seen, pytest.raises(fb.CircuitOpenError) as info:
        await br.call(counted)
    assert calls == 0
    assert info.value.retry_after == pytest.approx(3)
    assert info.value.breaker == "svc"
    assert [e.reason for e in seen if isinstance(e, CallRejected)] == ["open"]


async def test_slow_call_rate_opens_the_breaker(clock: FakeClock) -> None:
    br = breaker(clock, slow_call_duration=2, slow_call_rate=0.5)

    async def slow() -> str:
        await clock.sleep(3)
        return "late"

    for _ in range(2):
        await br.call(ok)
    await br.call(slow)
    assert br.state == "closed"
    await br.call(slow)
    assert br.state == "open"


async def test_consecutive_mode_opens_after_n_failures_in_a_row(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=3)
    await fail(br, 2)
    await br.call(ok)  # resets the run
    await fail(br, 2)
    assert br.state == "closed"
    await fail(br, 1)
    assert br.state == "open"


async def test_half_open_probe_success_closes(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5)
    await fail(br, 1)
    clock.advance(5)
    assert br.state == "half_open"
    with capture_events() as seen:
        assert await br.call(ok) == "ok"
    assert br.state == "closed"
    assert [(e.old, e.new) for e in seen if isinstance(e, BreakerStateChanged)] == [
        ("open", "half_open"),
        ("half_open", "closed"),
    ]


async def test_half_open_probe_failure_reopens_for_longer(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5, max_open_duration=60)
    await fail(br, 1)
    durations = []
    for _ in range(5):
        clock.advance(1000)
        with capture_events() as seen:
            await fail(br, 1)  # the probe fails
        durations += [
            e.open_for for e in seen if isinstance(e, BreakerStateChanged) and e.new == "open"
        ]
    assert durations == [10, 20, 40, 60, 60]


async def test_open_duration_is_jittered_within_bounds(clock: FakeClock) -> None:
    seen_durations = []
    for seed in range(30):
        br = fb.CircuitBreaker(
            "svc", clock=clock, rng=random.Random(seed), consecutive_failures=1, open_duration=10
        )
        with capture_events() as seen:
            await fail(br, 1)
        seen_durations += [e.open_for for e in seen if isinstance(e, BreakerStateChanged)]
    assert all(8 <= d <= 12 for d in seen_durations)
    assert len(set(seen_durations)) > 20


async def test_open_duration_is_never_shorter_than_retry_after(clock: FakeClock) -> None:
    class Throttled(Exception):
        retry_after = 42.0

    async def throttled() -> None:
        raise Throttled

    br = breaker(clock, consecutive_failures=1, open_duration=5)
    with pytest.raises(Throttled):
        await br.call(throttled)
    with pytest.raises(fb.CircuitOpenError) as info:
        await br.call(ok)
    assert info.value.retry_after == pytest.approx(42)


async def test_concurrent_callers_in_half_open_let_exactly_n_probes_through(
    clock: FakeClock,
) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5, half_open_probes=3)
    await fail(br, 1)
    clock.advance(5)
    reached = 0
    release = asyncio.Event()

    async def service() -> str:
        nonlocal reached
        reached += 1
        await release.wait()
        return "ok"

    tasks = [asyncio.create_task(br.call(service)) for _ in range(50)]
    for _ in range(10):
        await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert reached == 3
    assert sum(r == "ok" for r in results) == 3
    assert sum(isinstance(r, fb.CircuitOpenError) for r in results) == 47
    assert br.state == "closed"  # all three probes succeeded


async def test_a_probe_lease_follows_the_attempt_timeout_it_runs_under(
    clock: FakeClock,
) -> None:
    """RESILIENCE: a lease that expires after the attempt timeout. A probe of a slow model
    (45 s, under a 60 s attempt timeout) keeps its slot past the old fixed 30 s; its
    success closes the breaker."""
    br = breaker(clock, consecutive_failures=1, open_duration=5)
    pipe = fb.Pipeline(breaker=br, attempt_timeout=60, clock=clock)
    await fail(br, 1)
    clock.advance(5)
    answered = asyncio.Event()

    async def slow_model() -> str:
        await answered.wait()
        return "done"

    probe = asyncio.create_task(pipe.call(slow_model))
    await asyncio.sleep(0)
    clock.advance(45)
    with pytest.raises(fb.CircuitOpenError) as info:
        await br.call(ok)  # the probe still holds its slot
    assert info.value.retry_after == pytest.approx(61 - 45)
    answered.set()
    assert await probe == "done"
    assert br.state == "closed"


async def test_a_probe_lease_that_expires_frees_its_slot(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5, probe_lease=10)
    await fail(br, 1)
    clock.advance(5)
    hung = asyncio.Event()

    async def never_returns() -> None:
        await hung.wait()

    stuck = asyncio.create_task(br.call(never_returns))
    await asyncio.sleep(0)
    with pytest.raises(fb.CircuitOpenError) as info:
        await br.call(ok)  # the one probe slot is leased
    assert info.value.retry_after == pytest.approx(10)
    clock.advance(10)  # the hung probe's lease expires
    assert await br.call(ok) == "ok"
    assert br.state == "closed"
    hung.set()
    await stuck  # its late report is ignored
    assert br.state == "closed"


async def test_cancelled_calls_are_not_counted_and_free_a_probe_slot(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5)
    hung = asyncio.Event()

    async def hangs() -> None:
        await hung.wait()

    for _ in range(5):  # cancellation while closed counts as nothing
        task = asyncio.create_task(br.call(hangs))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert br.state == "closed"
    await fail(br, 1)
    clock.advance(5)
    probe = asyncio.create_task(br.call(hangs))
    await asyncio.sleep(0)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert br.state == "half_open"
    assert await br.call(ok) == "ok"  # the slot came back at once, no lease wait
    assert br.state == "closed"


async def test_permanent_errors_do_not_count_as_service_failures(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1)

    async def bad_request() -> None:
        raise fb.Permanent("400: invalid invoice")

    for _ in range(5):
        with pytest.raises(fb.Permanent):
            await br.call(bad_request)
    assert br.state == "closed"


async def test_counts_selects_which_errors_are_failures(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=1, counts=TimeoutError)
    await fail(br, 3)  # ConnectionError: not counted
    assert br.state == "closed"


async def test_async_with_form(clock: FakeClock) -> None:
    br = breaker(clock, consecutive_failures=2)
    for _ in range(2):
        with pytest.raises(ConnectionError):
            async with br:
                raise ConnectionError
    with pytest.raises(fb.CircuitOpenError):
        async with br:
            pytest.fail("the body must not run")


async def test_a_call_that_ends_after_the_breaker_opened_changes_nothing(
    clock: FakeClock,
) -> None:
    br = breaker(clock, consecutive_failures=1, open_duration=5)
    gate = asyncio.Event()

    async def late() -> None:
        await gate.wait()
        raise ConnectionError

    straggler = asyncio.create_task(br.call(late))
    await asyncio.sleep(0)
    await fail(br, 1)
    gate.set()
    with pytest.raises(ConnectionError):
        await straggler
    clock.advance(5)
    assert br.state == "half_open"


def test_registry_shares_one_breaker_per_service() -> None:
    registry = fb.BreakerRegistry()
    assert registry.get("ocr") is registry.get("ocr")
    assert registry.get("ocr") is not registry.get("llm")
    assert "ocr" in registry
    assert len(registry) == 2


def test_registry_refuses_a_second_policy_for_one_service() -> None:
    registry = fb.BreakerRegistry()
    registry.get("ocr", policy=fb.BreakerPolicy(failure_rate=0.3))
    with pytest.raises(ValueError, match="ocr"):
        registry.get("ocr", policy=fb.BreakerPolicy(failure_rate=0.6))


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"failure_rate": 0}, "failure_rate"),
        ({"failure_rate": 1.5}, "failure_rate"),
        ({"slow_call_rate": -0.1}, "slow_call_rate"),
        ({"half_open_probes": 0}, "half_open_probes"),
        ({"minimum_calls": 0}, "minimum_calls"),
        ({"open_duration": 0}, "open_duration"),
        ({"open_duration": 10, "max_open_duration": 5}, "max_open_duration"),
        ({"window": -1}, "window"),
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"open_jitter": 1}, "open_jitter"),
        ({"probe_lease": float("inf")}, "probe_lease"),
        ({"no_such_option": 1}, "no_such_option"),
    ],
)
def test_bad_configuration_names_the_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        fb.CircuitBreaker("svc", **options)


def test_a_breaker_that_could_never_close_is_refused() -> None:
    with pytest.raises(ValueError, match="never close"):
        fb.BreakerPolicy(half_open_probes=0)
