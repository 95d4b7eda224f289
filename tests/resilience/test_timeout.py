from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

import firebreak as fb
from firebreak.testing import FakeClock


async def test_a_call_past_its_timeout_raises_step_timeout(clock: FakeClock) -> None:
    with pytest.raises(fb.StepTimeout) as info:
        await fb.Timeout(10, clock=clock).call(clock.sleep, 30)
    assert isinstance(info.value, TimeoutError)
    assert info.value.timeout == 10
    assert clock.now() == 10


async def test_a_call_within_its_timeout_returns(clock: FakeClock) -> None:
    async def quick() -> str:
        await clock.sleep(1)
        return "ok"

    assert await fb.Timeout(10, clock=clock).call(quick) == "ok"


async def test_nested_timeouts_inherit_the_deadline(clock: FakeClock) -> None:
    seen: list[float | None] = []

    async def inner() -> None:
        seen.append(fb.time_left(clock))
        await fb.Timeout(100, clock=clock).call(clock.sleep, 50)

    with pytest.raises(fb.DeadlineExceeded):
        await fb.Deadline(5, clock=clock).call(inner)
    assert seen == [5]
    assert clock.now() == 5


async def test_an_expired_deadline_fails_before_calling(clock: FakeClock) -> None:
    called = False

    async def work() -> None:
        nonlocal called
        called = True

    async def later() -> None:
        await clock.sleep(10)
        await fb.Timeout(1, clock=clock).call(work)

    with pytest.raises(fb.DeadlineExceeded):
        await fb.Deadline(5, clock=clock).call(later)
    assert not called


async def test_deadline_is_restored_after_the_block(clock: FakeClock) -> None:
    assert fb.current_deadline() is None
    async with fb.Deadline(5, clock=clock):
        assert fb.current_deadline() == 5
        async with fb.Timeout(2, clock=clock):
            assert fb.current_deadline() == 2
        assert fb.current_deadline() == 5
    assert fb.current_deadline() is None


async def test_async_with_times_out_the_block(clock: FakeClock) -> None:
    with pytest.raises(fb.StepTimeout):
        async with fb.Timeout(3, clock=clock):
            await clock.sleep(10)
    assert clock.now() == 3


async def test_a_timeout_error_raised_by_the_call_itself_passes_through(clock: FakeClock) -> None:
    async def raises() -> None:
        raise TimeoutError("from the service")

    with pytest.raises(TimeoutError, match="from the service") as info:
        await fb.Timeout(10, clock=clock).call(raises)
    assert not isinstance(info.value, fb.StepTimeout)


async def test_outer_cancellation_is_not_turned_into_a_timeout(clock: FakeClock) -> None:
    task = asyncio.create_task(fb.Timeout(10, clock=clock).call(clock.sleep, 5))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_real_clock_timeouts_work_too() -> None:
    with pytest.raises(fb.StepTimeout):
        await fb.Timeout(0.01).call(asyncio.sleep, 5)


async def test_decorator_form(clock: FakeClock) -> None:
    @fb.Timeout(1, clock=clock)
    async def slow() -> None:
        await clock.sleep(2)

    with pytest.raises(fb.StepTimeout):
        await slow()


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan")])
def test_timeouts_must_be_finite_and_positive(bad: float) -> None:
    with pytest.raises(ValueError, match="seconds"):
        fb.Timeout(bad)


class _CountingClock(FakeClock):
    """A fake clock that counts the timers armed on it."""

    armed = 0

    def call_at(self, when: float, callback: Callable[[], object]) -> Any:
        self.armed += 1
        return super().call_at(when, callback)


async def test_a_call_that_never_waits_arms_no_timer() -> None:
    clock = _CountingClock()
    seen: list[float | None] = []

    async def cached() -> str:
        seen.append(fb.current_deadline())  # the limit is published all the same
        return "hit"

    async def failing() -> None:
        raise ValueError("bad input")

    timeout = fb.Timeout(10, clock=clock)
    assert await timeout.call(cached) == "hit"
    with pytest.raises(ValueError, match="bad input"):
        await timeout.call(failing)
    assert seen == [10]
    assert clock.armed == 0
    assert fb.current_deadline() is None


async def test_a_call_that_waits_after_its_first_suspension_still_times_out(
    clock: FakeClock,
) -> None:
    async def slow() -> None:
        await asyncio.sleep(0)  # a bare yield first, then a long wait
        await clock.sleep(30)

    with pytest.raises(fb.StepTimeout):
        await fb.Timeout(10, clock=clock).call(slow)
    assert clock.now() == 10


async def test_results_and_errors_reach_a_resumed_call(clock: FakeClock) -> None:
    loop = asyncio.get_running_loop()
    value: asyncio.Future[int] = loop.create_future()
    failure: asyncio.Future[int] = loop.create_future()
    loop.call_soon(value.set_result, 41)
    loop.call_soon(failure.set_exception, KeyError("gone"))

    async def agent() -> int:
        got = await value
        try:
            await failure
        except KeyError:
            got += 1
        return got

    assert await fb.Timeout(10, clock=clock).call(agent) == 42


async def test_a_cancel_from_outside_reaches_the_call_and_is_not_a_timeout(
    clock: FakeClock,
) -> None:
    cleaned = asyncio.Event()

    async def agent() -> None:
        try:
            await clock.sleep(30)
        finally:
            cleaned.set()

    task = asyncio.create_task(fb.Timeout(10, clock=clock).call(agent))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned.is_set()
    assert clock.now() < 10
