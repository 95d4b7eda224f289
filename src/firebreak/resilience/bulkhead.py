"""Bulkheads: a concurrency limit per agent or service that sheds load instead of queueing."""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import timedelta
from types import TracebackType
from typing import ParamSpec, TypeVar

from firebreak.clock import Clock, system_clock
from firebreak.errors import ConfigError, Overloaded
from firebreak.events import CallRejected, emit
from firebreak.resilience.timeout import duration, time_left

__all__ = ["Bulkhead"]

P = ParamSpec("P")
T = TypeVar("T")


class Bulkhead:
    """Let at most `limit` calls run at once; reject the rest at once with `Overloaded`.

    By default nothing queues: under a 10x surge the excess is shed with a clear error.
    With ``queue=N`` up to N callers wait, first come first served, each for at most
    `max_wait` seconds and never past the enclosing deadline.

    >>> import firebreak as fb
    >>> reports = fb.Bulkhead("report-writer", limit=4)
    """

    __slots__ = ("_active", "_clock", "_waiters", "limit", "max_wait", "name", "queue")

    def __init__(
        self,
        name: str = "bulkhead",
        *,
        limit: int,
        queue: int = 0,
        max_wait: float | timedelta = 1.0,
        clock: Clock = system_clock,
    ) -> None:
        if not isinstance(limit, int) or limit < 1:
            raise ConfigError("limit", f"must be an int >= 1, got {limit!r}")
        if not isinstance(queue, int) or queue < 0:
            raise ConfigError("queue", f"must be an int >= 0, got {queue!r}")
        self.name = name
        self.limit = limit
        self.queue = queue
        self.max_wait = duration(max_wait, "max_wait")
        self._clock = clock
        self._active = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    def __repr__(self) -> str:
        return f"Bulkhead({self.name!r}, limit={self.limit}, active={self._active})"

    @property
    def active(self) -> int:
        """Calls running now."""
        return self._active

    @property
    def waiting(self) -> int:
        """Callers queued now."""
        return sum(1 for w in self._waiters if not w.done())

    def _reject(self, reason: str) -> Overloaded:
        emit(CallRejected(source=self.name, kind="bulkhead", reason=reason))
        return Overloaded(self.name, limit=self.limit, reason=reason)

    async def acquire(self) -> None:
        """Take a slot, wait for one (bounded), or raise `Overloaded`."""
        if self._active < self.limit and not self._waiters:
            self._active += 1
            return
        if len(self._waiters) >= self.queue:
            raise self._reject("full")
        wait = self.max_wait
        left = time_left(self._clock)
        if left is not None:
            wait = min(wait, left)
        if wait <= 0:
            raise self._reject("wait_timeout")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)

        def give_up() -> None:
            if not fut.done():
                fut.set_exception(self._reject("wait_timeout"))

        timer = self._clock.call_at(self._clock.now() + wait, give_up)
        try:
            await fut
        except BaseException:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                self.release()  # the slot was handed to us just as we were cancelled
            elif fut in self._waiters:
                self._waiters.remove(fut)
            raise
        finally:
            timer.cancel()

    def release(self) -> None:
        """Give a slot back, handing it straight to the first waiter if there is one."""
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self._active -= 1

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` inside the bulkhead."""
        await self.acquire()
        try:
            return await fn(*args, **kwargs)
        finally:
            self.release()

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function."""
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return wrapper

    async def __aenter__(self) -> Bulkhead:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
