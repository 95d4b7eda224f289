"""Bounded retry with full-jitter exponential backoff, deadline-aware and budgeted.

>>> import firebreak as fb
>>> @fb.Retry(attempts=5, on=(TimeoutError, ConnectionError))
... async def call_llm(prompt: str) -> str:
...     return prompt.upper()
"""

from __future__ import annotations

import functools
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import ParamSpec, TypeVar

from firebreak.clock import Clock, system_clock
from firebreak.errors import CircuitOpenError, ConfigError, InvalidOutput
from firebreak.events import GaveUp, RetryScheduled, emit
from firebreak.resilience.budget import RetryBudget
from firebreak.resilience.classify import (
    ErrorFilter,
    RetryInfo,
    is_transient,
    matcher,
    retry_after_of,
    retry_info,
    tag,
)
from firebreak.resilience.timeout import current_deadline, duration

_NEVER = (InvalidOutput, CircuitOpenError)  # not retried, whatever `on=` matches

__all__ = ["Attempt", "Retry"]

P = ParamSpec("P")
T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """A retry policy: bounded attempts, full-jitter backoff, explicit error classes.

    The n-th retry waits ``uniform(0, min(cap, base * 2**(n-1)))`` seconds, or at least
    the ``Retry-After`` the service sent (plus a little jitter). A sleep that would end
    after the enclosing deadline is not started; the error is raised at once with
    `RetryInfo` attached (see `retry_info`). Errors that an inner `Retry` already retried
    are not retried again, so layered retries do not multiply the load. Cancellation is
    never retried. When retrying stops, the last error itself is raised.

    Use as a decorator, ``await retry.call(fn, ...)``, or for a block::

        async for attempt in retry.retrying():
            async with attempt:
                await flaky()
    """

    attempts: int = 3
    """Attempts in total, the first included (>= 1; unbounded retry is not expressible)."""
    base: float | timedelta = 1.0
    """Backoff before the first retry is drawn from 0..base seconds; doubles each retry."""
    cap: float | timedelta = 60.0
    """Upper bound of any single backoff."""
    on: ErrorFilter = is_transient
    """Error classes (or a predicate) worth retrying; default: transient errors."""
    budget: RetryBudget | None = None
    """A retry budget shared by every caller of the service, or ``None``."""
    retry_after_jitter: float = 0.1
    """Fraction of a ``Retry-After`` added at random (at most 1 s) to spread clients."""
    name: str = "retry"
    """Names the policy in events and tags."""
    clock: Clock = field(default=system_clock, compare=False, repr=False)
    """Time source; inject `firebreak.testing.FakeClock` in tests."""
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)
    """Jitter source; pass ``random.Random(seed)`` for a reproducible schedule."""
    _match: Callable[[BaseException], bool] = field(init=False, repr=False, compare=False)
    _base: float = field(init=False, repr=False, compare=False)
    _cap: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise ConfigError("attempts", f"must be an int >= 1, got {self.attempts!r}")
        base = duration(self.base, "base", allow_zero=True)
        cap = duration(self.cap, "cap", allow_zero=True)
        if cap < base:
            raise ConfigError("cap", f"must be >= base ({base}), got {cap}")
        if not 0 <= self.retry_after_jitter <= 1:
            raise ConfigError(
                "retry_after_jitter", f"must be within 0..1, got {self.retry_after_jitter!r}"
            )
        object.__setattr__(self, "_base", base)
        object.__setattr__(self, "_cap", cap)
        object.__setattr__(self, "_match", matcher(self.on))

    def backoff(self, retry: int) -> float:
        """The full-jitter wait before retry number `retry` (1 = the first retry)."""
        return self.rng.uniform(0, min(self._cap, self._base * 2.0 ** (retry - 1)))

    def next_delay(self, exc: BaseException, attempt: int) -> float | None:
        """Decide after attempt number `attempt` failed with `exc`: seconds to wait, or give up.

        Giving up tags `exc` with `RetryInfo` and emits `GaveUp` when the error was worth
        retrying. Also used by the engine, which runs attempts itself.
        """
        if not isinstance(exc, Exception) or retry_info(exc) is not None:
            return None  # cancellation, or already retried by an inner layer
        clock = self.clock
        retry_after = retry_after_of(exc, clock.wall())
        # Whatever `on=` says: the same call would give the same invalid output (the
        # fallbacks are for that), and an open circuit rejects until it lets a probe in.
        if not self._match(exc) or isinstance(exc, _NEVER):
            if attempt > 1:
                tag(exc, RetryInfo(self.name, attempt, "not_retryable", retry_after))
            return None
        if attempt >= self.attempts:
            self._give_up(exc, attempt, "attempts", retry_after)
            return None
        delay = self.backoff(attempt)
        if retry_after is not None:
            spread = self.rng.uniform(0, min(1.0, self.retry_after_jitter * retry_after))
            delay = max(delay, retry_after) + spread
        deadline = current_deadline()
        if deadline is not None and clock.now() + delay >= deadline:
            self._give_up(exc, attempt, "deadline", retry_after)
            return None
        if self.budget is not None and not self.budget.withdraw():
            self._give_up(exc, attempt, "budget", retry_after)
            return None
        emit(
            RetryScheduled(
                source=self.name, attempt=attempt, delay=delay, error_type=type(exc).__name__
            )
        )
        return delay

    def _give_up(
        self, exc: BaseException, attempt: int, reason: str, retry_after: float | None
    ) -> None:
        tag(exc, RetryInfo(self.name, attempt, reason, retry_after))
        emit(
            GaveUp(
                source=self.name,
                attempts=attempt,
                reason=reason,  # type: ignore[arg-type]
                error_type=type(exc).__name__,
                retry_after=retry_after,
            )
        )

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, retrying as the policy says."""
        if self.budget is not None:
            self.budget.deposit()
        attempt = 1
        while True:
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:
                delay = self.next_delay(exc, attempt)
                if delay is None:
                    raise
            attempt += 1
            await self.clock.sleep(delay)

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function."""
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return wrapper

    def retrying(self) -> _Attempts:
        """Iterate over attempts of a block: ``async for attempt in retry.retrying():``."""
        return _Attempts(self)


class Attempt:
    """One attempt of a block retried with `Retry.retrying`; use as ``async with``."""

    __slots__ = ("_delay", "_iterator", "number")

    def __init__(self, iterator: _Attempts, number: int) -> None:
        self._iterator = iterator
        self.number = number
        """1 for the first attempt."""

    async def __aenter__(self) -> Attempt:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is None:
            self._iterator.done = True
            return False
        delay = self._iterator.policy.next_delay(exc, self.number)
        if delay is None:
            self._iterator.done = True
            return False  # let the error through
        self._iterator.delay = delay
        return True  # swallowed: the next attempt follows


class _Attempts:
    __slots__ = ("delay", "done", "number", "policy")

    def __init__(self, policy: Retry) -> None:
        self.policy = policy
        self.number = 0
        self.delay = 0.0
        self.done = False
        if policy.budget is not None:
            policy.budget.deposit()

    def __aiter__(self) -> _Attempts:
        return self

    async def __anext__(self) -> Attempt:
        if self.done:
            raise StopAsyncIteration
        if self.number:
            await self.policy.clock.sleep(self.delay)
        self.number += 1
        return Attempt(self, self.number)
