from __future__ import annotations

import asyncio

import pytest

import firebreak as fb
from firebreak.events import CallRejected
from firebreak.testing import FakeClock, capture_events


async def test_calls_over_the_limit_are_shed_at_once(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("reports", limit=2, clock=clock)
    gate = asyncio.Event()
    running = 0

    async def work() -> str:
        nonlocal running
        running += 1
        await gate.wait()
        return "done"

    held = [asyncio.create_task(bulkhead.call(work)) for _ in range(2)]
    await asyncio.sleep(0)
    with capture_events() as seen, pytest.raises(fb.Overloaded) as info:
        await bulkhead.call(work)
    assert info.value.limit == 2
    assert info.value.bulkhead == "reports"
    assert [(e.kind, e.reason) for e in seen if isinstance(e, CallRejected)] == [
        ("bulkhead", "full")
    ]
    assert running == 2
    gate.set()
    assert await asyncio.gather(*held) == ["done", "done"]
    assert bulkhead.active == 0


async def test_ten_times_the_limit_admits_exactly_the_limit(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("ocr", limit=5, clock=clock)
    gate = asyncio.Event()

    async def work() -> None:
        await gate.wait()

    tasks = [asyncio.create_task(bulkhead.call(work)) for _ in range(50)]
    await asyncio.sleep(0)
    gate.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert sum(r is None for r in results) == 5
    assert sum(isinstance(r, fb.Overloaded) for r in results) == 45


async def test_bounded_queue_waits_then_gets_a_slot(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("b", limit=1, queue=1, max_wait=10, clock=clock)
    order: list[str] = []

    async def work(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        order.append(name)

    first = asyncio.create_task(bulkhead.call(work, "first", 3))
    await asyncio.sleep(0)
    second = asyncio.create_task(bulkhead.call(work, "second", 1))
    await asyncio.sleep(0)
    with pytest.raises(fb.Overloaded):  # the queue of one is taken
        await bulkhead.call(work, "third", 0)
    await asyncio.gather(first, second)
    assert order == ["first", "second"]
    assert clock.now() == 4


async def test_queued_wait_is_bounded_by_max_wait(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("b", limit=1, queue=5, max_wait=2, clock=clock)
    hold = asyncio.create_task(bulkhead.call(clock.sleep, 100))
    await asyncio.sleep(0)
    with pytest.raises(fb.Overloaded, match="wait_timeout"):
        await bulkhead.call(clock.sleep, 0)
    assert clock.now() == 2
    assert bulkhead.waiting == 0
    hold.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hold
    assert bulkhead.active == 0


async def test_queued_wait_is_bounded_by_the_deadline(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("b", limit=1, queue=5, max_wait=60, clock=clock)
    hold = asyncio.create_task(bulkhead.call(clock.sleep, 100))
    await asyncio.sleep(0)
    # The wait and the deadline end at the same instant: either error says why.
    with pytest.raises((fb.Overloaded, fb.DeadlineExceeded)):
        await fb.Deadline(3, clock=clock).call(bulkhead.call, clock.sleep, 0)
    assert clock.now() == pytest.approx(3)
    assert bulkhead.waiting == 0
    hold.cancel()
    with pytest.raises(asyncio.CancelledError):
        await hold


async def test_slot_is_released_when_the_call_fails(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("b", limit=1, clock=clock)

    async def boom() -> None:
        raise RuntimeError

    for _ in range(3):
        with pytest.raises(RuntimeError):
            await bulkhead.call(boom)
    assert bulkhead.active == 0


async def test_async_with_form(clock: FakeClock) -> None:
    bulkhead = fb.Bulkhead("b", limit=1, clock=clock)
    async with bulkhead:
        assert bulkhead.active == 1
        with pytest.raises(fb.Overloaded):
            async with bulkhead:
                pytest.fail("over the limit")
    assert bulkhead.active == 0


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1, "queue": -1}, "queue"),
        ({"limit": 1, "max_wait": 0}, "max_wait"),
    ],
)
def test_bad_configuration_names_the_field(options: dict[str, int], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        fb.Bulkhead("b", **options)
