from __future__ import annotations

import asyncio

import pytest

from firebreak.testing import FakeClock


async def test_sleep_jumps_virtual_time_without_waiting(clock: FakeClock) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await clock.sleep(3600)
    assert clock.now() == 3600
    assert loop.time() - start < 5  # generous: it took no real hour


async def test_concurrent_sleepers_wake_in_time_order(clock: FakeClock) -> None:
    woke: list[int] = []

    async def sleeper(n: int) -> None:
        await clock.sleep(n)
        woke.append(n)

    await asyncio.gather(*(sleeper(n) for n in (5, 1, 3)))
    assert woke == [1, 3, 5]
    assert clock.now() == 5


async def test_manual_advance_fires_due_timers() -> None:
    clock = FakeClock(autojump=False)
    task = asyncio.create_task(clock.sleep(10))
    await asyncio.sleep(0)
    clock.advance(9)
    await asyncio.sleep(0)
    assert not task.done()
    clock.advance(1)
    await asyncio.sleep(0)
    assert task.done()


def test_wall_time_moves_with_monotonic_time() -> None:
    clock = FakeClock(wall=1000.0)
    clock.advance(5)
    assert (clock.now(), clock.wall()) == (5, 1005)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(-1)


async def test_time_stands_still_while_held(clock: FakeClock) -> None:
    """Real work bracketed by hold/release (a store call) is not idle time to jump over."""
    sleeper = asyncio.create_task(clock.sleep(10))
    clock.hold()
    await asyncio.to_thread(lambda: None)  # the loop idles while a thread works
    for _ in range(20):
        await asyncio.sleep(0)
    assert clock.now() == 0
    assert not sleeper.done()
    clock.release()
    await sleeper
    assert clock.now() == 10
    await clock.aclose()
