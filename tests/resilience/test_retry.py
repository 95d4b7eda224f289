from __future__ import annotations

import asyncio
import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

import firebreak as fb
from firebreak.events import BudgetExhausted, GaveUp, RetryScheduled
from firebreak.testing import FakeClock, capture_events


class Flaky:
    """Fails `failures` times with `error`, then returns "ok"; counts calls."""

    def __init__(self, failures: int, error: BaseException | None = None) -> None:
        self.failures = failures
        self.error = error or TimeoutError("slow")
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return "ok"


class HttpError(Exception):
    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"HTTP {status}")
        self.status_code = status
        self.headers = headers or {}


async def test_transient_errors_are_retried_until_success(clock: FakeClock) -> None:
    fn = Flaky(2)
    assert await fb.Retry(attempts=3, clock=clock).call(fn) == "ok"
    assert fn.calls == 3


async def test_attempts_are_bounded_and_the_last_error_is_raised_tagged(clock: FakeClock) -> None:
    fn = Flaky(10)
    with capture_events() as seen, pytest.raises(TimeoutError) as info:
        await fb.Retry(attempts=3, clock=clock, name="llm").call(fn)
    assert fn.calls == 3
    tag = fb.retry_info(info.value)
    assert tag is not None
    assert (tag.attempts, tag.reason, tag.policy) == (3, "attempts", "llm")
    assert [type(e) for e in seen] == [RetryScheduled, RetryScheduled, GaveUp]


async def test_errors_not_named_in_on_are_not_retried(clock: FakeClock) -> None:
    fn = Flaky(1, KeyError("x"))
    with pytest.raises(KeyError):
        await fb.Retry(attempts=5, on=TimeoutError, clock=clock).call(fn)
    assert fn.calls == 1


async def test_on_accepts_a_predicate(clock: FakeClock) -> None:
    fn = Flaky(2, ValueError("retry me"))
    policy = fb.Retry(attempts=3, on=lambda e: "retry" in str(e), clock=clock)
    assert await policy.call(fn) == "ok"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
async def test_transient_http_statuses_are_retried_by_default(
    clock: FakeClock, status: int
) -> None:
    fn = Flaky(1, HttpError(status))
    assert await fb.Retry(attempts=2, clock=clock).call(fn) == "ok"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
async def test_other_4xx_are_permanent_by_default(clock: FakeClock, status: int) -> None:
    fn = Flaky(1, HttpError(status))
    with pytest.raises(HttpError):
        await fb.Retry(attempts=3, clock=clock).call(fn)
    assert fn.calls == 1


async def test_permanent_marker_is_never_retried_even_if_named(clock: FakeClock) -> None:
    fn = Flaky(1, fb.Permanent("card declined"))
    with pytest.raises(fb.Permanent):
        await fb.Retry(attempts=3, clock=clock).call(fn)
    assert fn.calls == 1


@pytest.mark.parametrize(
    "error",
    [fb.InvalidOutput("agent 'parse': not an amount"), fb.CircuitOpenError("ocr", retry_after=5)],
)
async def test_invalid_output_and_an_open_circuit_are_not_retried_even_on_exception(
    clock: FakeClock, error: Exception
) -> None:
    """The same call gives the same invalid output (the fallbacks are for that); an open
    circuit rejects at once until its time is up: retrying either only adds load."""
    fn = Flaky(1, error)
    with pytest.raises(type(error)):
        await fb.Retry(attempts=3, on=Exception, clock=clock).call(fn)
    assert fn.calls == 1


async def test_cancellation_is_never_retried(clock: FakeClock) -> None:
    fn = Flaky(1, asyncio.CancelledError())
    with capture_events() as seen, pytest.raises(asyncio.CancelledError):
        await fb.Retry(attempts=5, on=BaseException, clock=clock).call(fn)  # type: ignore[arg-type]
    assert fn.calls == 1
    assert seen == []


async def test_a_cancelled_backoff_sleep_stops_retrying(clock: FakeClock) -> None:
    fn = Flaky(10)
    task = asyncio.create_task(fb.Retry(attempts=5, base=100, cap=100, clock=clock).call(fn))
    await asyncio.sleep(0)  # first attempt fails, backoff sleep starts
    assert fn.calls == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert fn.calls == 1


async def test_backoff_is_full_jitter_within_exponential_bounds_and_cap(clock: FakeClock) -> None:
    policy = fb.Retry(attempts=10, base=1, cap=8, clock=clock, rng=random.Random(7))
    for retry in range(1, 10):
        ceiling = min(8, 2 ** (retry - 1))
        draws = [policy.backoff(retry) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # full jitter spreads over the whole range


async def test_the_same_seed_gives_the_same_schedule() -> None:
    a, b = FakeClock(), FakeClock()
    with pytest.raises(TimeoutError):
        await fb.Retry(attempts=5, clock=a, rng=random.Random(3)).call(Flaky(9))
    with pytest.raises(TimeoutError):
        await fb.Retry(attempts=5, clock=b, rng=random.Random(3)).call(Flaky(9))
    assert a.sleeps == b.sleeps
    assert len(a.sleeps) == 4


async def test_retry_after_seconds_is_honoured(clock: FakeClock) -> None:
    fn = Flaky(1, HttpError(429, {"Retry-After": "7"}))
    policy = fb.Retry(attempts=2, base=0.1, cap=0.1, clock=clock)
    assert await policy.call(fn) == "ok"
    assert 7 <= clock.sleeps[0] <= 7.7


async def test_retry_after_http_date_is_honoured(clock: FakeClock) -> None:
    when = datetime.fromtimestamp(clock.wall(), UTC) + timedelta(seconds=20)
    fn = Flaky(1, HttpError(503, {"Retry-After": format_datetime(when, usegmt=True)}))
    assert await fb.Retry(attempts=2, base=0.1, clock=clock).call(fn) == "ok"
    assert 19 <= clock.sleeps[0] <= 21


async def test_retry_after_beyond_the_deadline_fails_now_with_it_attached(
    clock: FakeClock,
) -> None:
    fn = Flaky(5, HttpError(429, {"Retry-After": "60"}))
    policy = fb.Retry(attempts=5, clock=clock)
    with pytest.raises(HttpError) as info:
        await fb.Deadline(10, clock=clock).call(policy.call, fn)
    assert fn.calls == 1
    tag = fb.retry_info(info.value)
    assert tag is not None
    assert (tag.reason, tag.retry_after) == ("deadline", 60.0)
    assert clock.now() == 0  # it did not sleep towards a wait it could not finish


async def test_no_sleep_is_started_that_would_end_after_the_deadline(clock: FakeClock) -> None:
    fn = Flaky(100)
    policy = fb.Retry(attempts=100, base=1, cap=4, clock=clock, rng=random.Random(1))
    with pytest.raises(TimeoutError) as info:
        await fb.Deadline(10, clock=clock).call(policy.call, fn)
    assert clock.now() < 10
    assert fb.retry_info(info.value).reason == "deadline"  # type: ignore[union-attr]


async def test_errors_an_inner_retry_gave_up_on_are_not_retried_again(clock: FakeClock) -> None:
    fn = Flaky(100)
    inner = fb.Retry(attempts=4, clock=clock, name="inner")
    outer = fb.Retry(attempts=4, clock=clock, name="outer")
    with pytest.raises(TimeoutError) as info:
        await outer.call(inner.call, fn)
    assert fn.calls == 4  # not 16
    assert fb.retry_info(info.value).policy == "inner"  # type: ignore[union-attr]


async def test_exhausted_budget_fails_fast_with_an_event(clock: FakeClock) -> None:
    budget = fb.RetryBudget("ocr", ratio=0.0, min_per_second=0.0, capacity=2, clock=clock)
    policy = fb.Retry(attempts=10, base=0, cap=0, budget=budget, clock=clock)
    fn = Flaky(100)
    with capture_events() as seen, pytest.raises(TimeoutError) as info:
        await policy.call(fn)
    assert fn.calls == 2  # the first attempt plus the one retry the budget held
    assert fb.retry_info(info.value).reason == "budget"  # type: ignore[union-attr]
    assert any(isinstance(e, BudgetExhausted) and e.source == "ocr" for e in seen)


async def test_retrying_block_form(clock: FakeClock) -> None:
    fn = Flaky(2)
    result = None
    async for attempt in fb.Retry(attempts=3, clock=clock).retrying():
        async with attempt:
            result = await fn()
    assert (result, fn.calls, attempt.number) == ("ok", 3, 3)


async def test_retrying_block_form_raises_when_exhausted(clock: FakeClock) -> None:
    fn = Flaky(9)
    with pytest.raises(TimeoutError):
        async for attempt in fb.Retry(attempts=2, clock=clock).retrying():
            async with attempt:
                await fn()
    assert fn.calls == 2


async def test_decorator_keeps_name_and_arguments(clock: FakeClock) -> None:
    @fb.Retry(attempts=2, clock=clock)
    async def add(a: int, b: int = 1) -> int:
        """Add."""
        return a + b

    assert await add(2, b=3) == 5
    assert add.__name__ == "add"
    assert add.__doc__ == "Add."


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"attempts": 0}, "attempts"),
        ({"base": -1}, "base"),
        ({"cap": -1}, "cap"),
        ({"base": 10, "cap": 1}, "cap"),
        ({"base": float("inf")}, "base"),
        ({"retry_after_jitter": 2}, "retry_after_jitter"),
    ],
)
def test_bad_configuration_names_the_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field) as info:
        fb.Retry(**options)  # type: ignore[arg-type]
    assert info.value.field == field  # type: ignore[attr-defined]


def test_durations_accept_timedelta() -> None:
    policy = fb.Retry(base=timedelta(milliseconds=500), cap=timedelta(seconds=2))
    assert 0 <= policy.backoff(5) <= 2
