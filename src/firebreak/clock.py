"""Time, injected: every sleep, timeout and timestamp in firebreak goes through a `Clock`.

Production code uses `SystemClock` (the monotonic clock of the running event loop);
tests use `firebreak.testing.FakeClock`, so no test sleeps for real.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable
from typing import Protocol

__all__ = ["Cancellable", "Clock", "SystemClock", "system_clock"]


class Cancellable(Protocol):
    """A scheduled callback that can be called off."""

    def cancel(self) -> None:
        """Do not run the callback (no effect once it ran)."""
        ...


class Clock(Protocol):
    """The time source of firebreak's primitives."""

    def now(self) -> float:
        """Monotonic seconds: use for durations, deadlines and breaker windows."""
        ...

    def wall(self) -> float:
        """Wall-clock seconds since the epoch: use for HTTP dates and stored timestamps."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` (monotonic)."""
        ...

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run `callback` in the running event loop when `now()` reaches `when`."""
        ...


class SystemClock:
    """The real clock: `time.monotonic`, `time.time`, and asyncio's sleep and timeouts.

    `call_at` converts our monotonic time to the loop's clock, which is `time.monotonic`
    for asyncio's own loops but need not be for others (uvloop). Timers more than
    `COARSE_AFTER` seconds away go to a timer wheel that fires them at most `TICK` late:
    arming and disarming a per-call timeout then costs a set insertion instead of a heap
    push, and nearly every timeout is disarmed long before it fires.
    """

    __slots__ = ()

    now = staticmethod(time.monotonic)
    wall = staticmethod(time.time)

    async def sleep(self, seconds: float) -> None:
        """Sleep for real."""
        await asyncio.sleep(seconds)

    TICK = 0.01
    COARSE_AFTER = 1.0

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run `callback` at the `time.monotonic` instant `when` (see the class notes)."""
        loop = asyncio.get_running_loop()
        if when - time.monotonic() > self.COARSE_AFTER:
            wheel = _last_wheel[0]
            if wheel is None or wheel.loop is not loop:
                wheel = _wheels.get(loop)
                if wheel is None:
                    wheel = _wheels[loop] = _Wheel(loop, self.TICK)
                _last_wheel[0] = wheel
            return wheel.add(when, callback)
        if type(loop) not in _MONOTONIC_LOOPS:
            when += loop.time() - time.monotonic()
        return loop.call_at(when, callback)

    def __repr__(self) -> str:
        return "SystemClock()"


class _WheelTimer:
    __slots__ = ("callback", "slot", "wheel")

    def __init__(self, wheel: _Wheel, slot: int, callback: Callable[[], object]) -> None:
        self.wheel = wheel
        self.slot = slot
        self.callback: Callable[[], object] | None = callback

    def cancel(self) -> None:
        self.callback = None  # not run even if its slot is being swept right now
        slots = self.wheel.slots
        timers = slots.get(self.slot)
        if timers is not None:
            timers.discard(self)
            if not timers:  # nearly every timer is cancelled: keep the wheel small
                del slots[self.slot]


class _Wheel:
    """Timers bucketed by `tick`-sized slots, swept by one loop callback per tick.

    It ticks only while it holds timers; a sweep visits the slots that came due.
    """

    __slots__ = ("done", "handle", "loop", "slots", "tick")

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        self.loop = loop
        self.tick = tick
        self.slots: dict[int, set[_WheelTimer]] = {}
        self.done = int(time.monotonic() / tick)  # every slot up to this one was swept
        self.handle: asyncio.TimerHandle | None = None

    def add(self, when: float, callback: Callable[[], object]) -> _WheelTimer:
        slot = int(when / self.tick) + 1  # never early: fire in the slot after `when`
        timer = _WheelTimer(self, slot, callback)
        timers = self.slots.get(slot)
        if timers is None:
            timers = self.slots[slot] = set()
        timers.add(timer)
        if self.handle is None:
            self.handle = self.loop.call_later(self.tick, self._sweep)
        return timer

    def _sweep(self) -> None:
        self.handle = None
        now_slot = int(time.monotonic() / self.tick)
        slots = self.slots
        if len(slots) < now_slot - self.done:  # few slots held: visit them, not the gap
            due = sorted(s for s in slots if s <= now_slot)
        else:
            due = [s for s in range(self.done + 1, now_slot + 1) if s in slots]
        self.done = now_slot
        for slot in due:
            for timer in slots.pop(slot):
                callback = timer.callback
                if callback is not None:
                    callback()
        if slots:
            self.handle = self.loop.call_later(self.tick, self._sweep)


_wheels: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wheel] = weakref.WeakKeyDictionary()
_last_wheel: list[_Wheel | None] = [None]  # the wheel used last: a weak dict lookup costs more

# asyncio's own loops keep time with time.monotonic: no conversion needed for them.
_MONOTONIC_LOOPS = {asyncio.SelectorEventLoop, getattr(asyncio, "ProactorEventLoop", None)}

system_clock = SystemClock()
"""The process-wide real clock, the default of every primitive."""
