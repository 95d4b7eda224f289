"""The real clock's timer wheel: timers fire, never early, and cancelled ones never fire."""

from __future__ import annotations

import asyncio
import time

import pytest

from firebreak.clock import SystemClock, _wheels, system_clock


@pytest.fixture
def coarse(monkeypatch: pytest.MonkeyPatch) -> None:
    """Send every timer to the wheel (normally only those more than a second away)."""
    monkeypatch.setattr(SystemClock, "COARSE_AFTER", 0.0)


@pytest.mark.usefixtures("coarse")
async def test_wheel_timers_fire_and_never_early() -> None:
    fired: list[float] = []
    done = asyncio.Event()
    when = time.monotonic() + 0.03

    def callback() -> None:
        fired.append(time.monotonic())
        done.set()

    system_clock.call_at(when, callback)
    await asyncio.wait_for(done.wait(), 5)
    assert fired[0] >= when


@pytest.mark.usefixtures("coarse")
async def test_cancelled_timers_never_fire_and_leave_the_wheel_empty() -> None:
    fired: list[int] = []
    timers = [
        system_clock.call_at(time.monotonic() + 0.02, lambda i=i: fired.append(i))
        for i in range(100)
    ]
    for timer in timers:
        timer.cancel()
    assert not _wheels[asyncio.get_running_loop()].slots  # nothing kept for dead timers
    await asyncio.sleep(0.05)
    assert fired == []


@pytest.mark.usefixtures("coarse")
async def test_a_timer_cancelled_by_another_in_the_same_sweep_does_not_fire() -> None:
    fired: list[str] = []
    when = time.monotonic() + 0.02
    done = asyncio.Event()
    second = None

    def first() -> None:
        fired.append("first")
        assert second is not None
        second.cancel()  # its slot is being swept right now
        done.set()

    # Same slot; which of the two the sweep visits first is not defined, so each cancels
    # the other: exactly one may run.
    a = system_clock.call_at(when, first)
    second = system_clock.call_at(when, lambda: (fired.append("second"), a.cancel(), done.set()))
    await asyncio.wait_for(done.wait(), 5)
    await asyncio.sleep(0.03)
    assert len(fired) == 1
