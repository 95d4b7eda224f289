"""Timeouts and deadlines that nested calls inherit.

A `Timeout` bounds one call (or block) and a `Deadline` bounds everything inside it. Both
publish their end time in a context variable, so a nested timeout never outlives its
parent, a retry never starts a sleep that would end after it, and an attempt's timeout is
``min(attempt timeout, time left)``.

>>> import asyncio, firebreak as fb
>>> @fb.Timeout(0.5)
... async def fetch() -> str:
...     return "ok"
>>> asyncio.run(fetch())
'ok'
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from contextvars import ContextVar, Token
from datetime import timedelta
from types import CoroutineType, TracebackType
from typing import Any, ParamSpec, TypeVar

from firebreak._eager import await_rest
from firebreak.clock import Cancellable, Clock, system_clock
from firebreak.errors import ConfigError, DeadlineExceeded, StepTimeout
from firebreak.resilience._scopes import TaskScopes

__all__ = ["Deadline", "Timeout", "as_seconds", "current_deadline", "duration", "time_left"]

P = ParamSpec("P")
T = TypeVar("T")

_deadline: ContextVar[float | None] = ContextVar("firebreak_deadline", default=None)


def duration(value: float | timedelta, field: str, *, allow_zero: bool = False) -> float:
    """Normalise a duration given as seconds or `timedelta`; reject what is not finite."""
    out = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if math.isnan(out) or math.isinf(out):
        raise ConfigError(field, f"must be a finite duration, got {value!r}")
    if out < 0 or (out == 0 and not allow_zero):
        raise ConfigError(field, f"must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return out


def as_seconds(value: float | timedelta) -> float:
    """Seconds of an already validated duration."""
    return value.total_seconds() if isinstance(value, timedelta) else value


def current_deadline() -> float | None:
    """The monotonic time (per the clock in use) the innermost deadline ends, if any."""
    return _deadline.get()


def time_left(clock: Clock = system_clock) -> float | None:
    """Seconds until the innermost deadline, or ``None`` when no deadline applies."""
    when = _deadline.get()
    return None if when is None else when - clock.now()


class _Expiry:
    """Cancels a task when called: the timer callback of one timeout scope.

    The same cancel/uncancel protocol as `asyncio.timeout`, without its state machine:
    a timer per call is the whole cost of a timeout, so it is kept small.
    """

    __slots__ = ("cancelling", "fired", "handle", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.fired = False
        self.handle: Cancellable | None = None

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()

    def close(self, exc: BaseException | None) -> bool:
        """Disarm; ``True`` when this scope's expiry caused `exc` (a cancellation)."""
        if self.handle is not None:
            self.handle.cancel()
        if not self.fired:
            return False
        # Take back our cancel request; it was ours alone if the count drops to where it was.
        return self.task.uncancel() <= self.cancelling and isinstance(exc, asyncio.CancelledError)


class Timeout:
    """Bound a call or block to `seconds`, and to whatever deadline encloses it.

    Raises `StepTimeout` (a `TimeoutError`) when its own limit is hit and
    `DeadlineExceeded` when an enclosing deadline ends first. Use as a decorator,
    ``await timeout.call(fn, ...)`` or ``async with timeout:``.
    """

    __slots__ = ("_clock", "_scopes", "name", "seconds")

    _own_error: type[StepTimeout] = StepTimeout

    def __init__(
        self,
        seconds: float | timedelta,
        *,
        name: str = "",
        clock: Clock = system_clock,
    ) -> None:
        self.seconds = duration(seconds, "seconds")
        self.name = name
        self._clock = clock
        self._scopes: TaskScopes[tuple[Token[float | None], _Expiry, bool]] = TaskScopes()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.seconds!r})"

    def _error(self, *, inherited: bool) -> StepTimeout:
        what = f" {self.name!r}" if self.name else ""
        if inherited:  # not our limit: `timeout` says which one did not end it
            return DeadlineExceeded(
                f"deadline exceeded{what}: an enclosing deadline (the run's, or a caller's) "
                f"ended first, before this call's own {self.seconds:g}s",
                timeout=self.seconds,
            )
        return self._own_error(f"timed out{what} after {self.seconds:g}s", timeout=self.seconds)

    def _end(self) -> tuple[float, bool]:
        """When this scope ends, and whether an enclosing deadline decides it."""
        now = self._clock.now()
        when = now + self.seconds
        inherited = _deadline.get()
        by_parent = inherited is not None and inherited <= when
        if by_parent:
            when = inherited  # type: ignore[assignment]
        if when <= now:
            raise self._error(inherited=by_parent)
        return when, by_parent

    def _arm(self, when: float) -> _Expiry:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a timeout needs a running asyncio task")
        expiry = _Expiry(task)
        expiry.handle = self._clock.call_at(when, expiry)
        return expiry

    def _open(self) -> tuple[Token[float | None], _Expiry, bool]:
        when, by_parent = self._end()
        return _deadline.set(when), self._arm(when), by_parent

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` within the limit."""
        when, inherited = self._end()
        token = _deadline.set(when)
        expiry: _Expiry | None = None
        try:
            aw = fn(*args, **kwargs)
            if type(aw) is CoroutineType:
                # Up to its first suspension before arming the timer: a call that never
                # suspends cannot be interrupted anyway (the timer is most of the cost).
                try:
                    first = aw.send(None)
                except StopIteration as done:
                    return done.value  # type: ignore[no-any-return]
                try:
                    expiry = self._arm(when)
                except BaseException:
                    aw.close()
                    raise
                result: T = await await_rest(aw, first)
            else:
                expiry = self._arm(when)
                result = await aw
        except BaseException as exc:
            if expiry is not None and expiry.close(exc):
                raise self._error(inherited=inherited) from None
            raise
        finally:
            _deadline.reset(token)
        expiry.close(None)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function."""
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return wrapper

    async def __aenter__(self) -> None:
        self._scopes.push(self._open())

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token, expiry, inherited = self._scopes.pop()
        _deadline.reset(token)
        if expiry.close(exc):
            raise self._error(inherited=inherited) from None


class Deadline(Timeout):
    """A deadline for everything inside: nested timeouts, retries and sleeps inherit it.

    Identical to `Timeout` except that reaching its own end raises `DeadlineExceeded`.
    """

    __slots__ = ()
    _own_error = DeadlineExceeded


class DeadlineMark:
    """Publish a deadline to everything inside without arming a timer of its own.

    Only sound where every wait inside is already bounded by the deadline it publishes —
    the `Pipeline` uses it for its total timeout when an attempt timeout is set: each
    attempt's timer is cut to the time left and the retry never sleeps past it, so a
    second timer would only cost time on every call.
    """

    __slots__ = ("_clock", "seconds")

    def __init__(self, seconds: float | timedelta, *, clock: Clock = system_clock) -> None:
        self.seconds = duration(seconds, "seconds")
        self._clock = clock

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` with the deadline published."""
        now = self._clock.now()
        when = now + self.seconds
        inherited = _deadline.get()
        if inherited is not None and inherited < when:
            when = inherited
        if when <= now:
            raise DeadlineExceeded("deadline exceeded 'total'", timeout=self.seconds)
        token = _deadline.set(when)
        try:
            return await fn(*args, **kwargs)
        finally:
            _deadline.reset(token)
