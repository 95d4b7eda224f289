"""`FakeClock`: virtual time, so sleeps, timeouts and lease expiry need no real waiting.

>>> import asyncio
>>> from firebreak.testing import FakeClock
>>> clock = FakeClock()
>>> async def main() -> float:
...     await clock.sleep(3600)          # returns at once: virtual time jumps
...     return clock.now()
>>> asyncio.run(main())
3600.0
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
from collections.abc import Callable

__all__ = ["FakeClock"]


class _Timer:
    __slots__ = ("callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[[], object]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """A virtual clock: sleeps and timeouts complete without waiting for real time.

    With ``autojump=True`` (the default) time jumps to the next timer whenever the event
    loop has nothing else to run, the way Trio's ``MockClock(autojump_threshold=0)``
    does; `advance` moves time by hand. Timers fire in time order, so a 10 s timeout
    around a 30 s sleep fires at virtual second 10. `sleeps` records every requested sleep.

    Autojump assumes the code under test waits only on this clock: a test that also
    waits for real I/O should bracket it with `hold`/`release` (time stands still in
    between), or use ``autojump=False`` and `advance`. `aclose` stops the jumping: two
    auto-jumping clocks on one loop would keep each other from ever seeing it idle.
    """

    def __init__(
        self, start: float = 0.0, *, wall: float = 1_700_000_000.0, autojump: bool = True
    ) -> None:
        self._now = float(start)
        self._wall_offset = wall - start
        self._timers: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()
        self._autojump = autojump
        self._jumper: asyncio.Task[None] | None = None
        self._held = 0
        self._free: asyncio.Event | None = None
        self.sleeps: list[float] = []
        """Every duration passed to `sleep`, in call order."""

    def now(self) -> float:
        """Virtual monotonic seconds."""
        return self._now

    def wall(self) -> float:
        """Virtual epoch seconds (moves with `now`)."""
        return self._wall_offset + self._now

    def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, firing every timer that comes due, in order."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        target = self._now + seconds
        while self._timers and self._timers[0][0] <= target:
            when, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                self._now = max(self._now, when)
                timer.callback()
        self._now = target

    def call_at(self, when: float, callback: Callable[[], object]) -> _Timer:
        """Run `callback` when virtual time reaches `when`; returns a cancellable handle."""
        timer = _Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), timer))
        if self._autojump and (self._jumper is None or self._jumper.done()):
            self._jumper = asyncio.get_running_loop().create_task(self._jump())
        return timer

    async def sleep(self, seconds: float) -> None:
        """Sleep in virtual time."""
        self.sleeps.append(seconds)
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not fut.done():
                fut.set_result(None)

        timer = self.call_at(self._now + seconds, wake)
        try:
            await fut
        finally:
            timer.cancel()

    def hold(self) -> None:
        """Stop time until the matching `release` (real work, e.g. a store call, in flight)."""
        self._held += 1

    def release(self) -> None:
        """End one `hold`."""
        self._held -= 1
        if self._held == 0 and self._free is not None:
            self._free.set()

    async def aclose(self) -> None:
        """Stop jumping and forget pending timers."""
        jumper, self._jumper = self._jumper, None
        if jumper is not None and not jumper.done():
            jumper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await jumper
        self._timers.clear()

    async def _jump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await _until_idle(loop)
            if self._held:  # real work in flight: it is not idle time
                self._free = self._free or asyncio.Event()
                self._free.clear()
                await self._free.wait()
                continue
            while self._timers and self._timers[0][2].cancelled:
                heapq.heappop(self._timers)
            if not self._timers:
                return
            when, _, timer = heapq.heappop(self._timers)
            self._now = max(self._now, when)
            timer.callback()

    def __repr__(self) -> str:
        return f"FakeClock(now={self._now!r})"


async def _until_idle(loop: asyncio.AbstractEventLoop) -> None:
    """Yield until nothing but this task is ready to run (twice in a row)."""
    ready = getattr(loop, "_ready", None)  # asyncio's run queue; other loops: yield a while
    quiet = 0
    for _ in range(10_000):
        await asyncio.sleep(0)
        if ready is None:
            quiet += 1
            if quiet >= 50:
                return
        elif len(ready) == 0:
            quiet += 1
            if quiet >= 2:
                return
        else:
            quiet = 0
