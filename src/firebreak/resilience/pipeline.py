"""The pipeline: every resilience pattern around one call, in the order that works.

Outermost first: fallback → bulkhead → total timeout (a deadline) → retry → circuit
breaker → attempt timeout → the call. So a shed or failed call can still fall back, the
bulkhead bounds concurrency across all retries, retries never sleep past the total
timeout, every attempt asks the breaker, and each attempt has its own time limit.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, ParamSpec, TypeVar

from firebreak.clock import Clock, system_clock
from firebreak.resilience.breaker import CircuitBreaker
from firebreak.resilience.bulkhead import Bulkhead
from firebreak.resilience.fallback import Fallback
from firebreak.resilience.retry import Retry
from firebreak.resilience.timeout import Deadline, DeadlineMark, Timeout

__all__ = ["Pipeline"]

P = ParamSpec("P")
T = TypeVar("T")

Layer = Callable[..., Awaitable[Any]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Pipeline:
    """Compose the primitives around a call; every layer is optional.

    >>> import firebreak as fb
    >>> policy = fb.Pipeline(
    ...     retry=fb.Retry(attempts=5),
    ...     breaker=fb.breakers.get("llm-api"),
    ...     attempt_timeout=30,
    ...     timeout=120,
    ... )
    >>> @policy
    ... async def summarise(text: str) -> str:
    ...     return text[:100]
    """

    fallback: Fallback | None = None
    """Alternatives when everything inside failed (outermost)."""
    bulkhead: Bulkhead | None = None
    """Concurrency limit around all attempts."""
    timeout: float | timedelta | None = None
    """Total time for all attempts and backoff; a deadline nested calls inherit."""
    retry: Retry | None = None
    """Retry policy; each attempt passes the breaker again."""
    breaker: CircuitBreaker | None = None
    """The service's breaker (usually from `firebreak.breakers`)."""
    attempt_timeout: float | timedelta | None = None
    """Time limit of one attempt (cut to the time left)."""
    clock: Clock = field(default=system_clock, compare=False, repr=False)
    """Time source of the timeouts."""
    _layers: tuple[Callable[[Layer], Layer], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Innermost first: each entry wraps the callable built so far.
        layers: list[Callable[[Layer], Layer]] = []
        if self.attempt_timeout is not None:
            layers.append(
                _wrap(Timeout(self.attempt_timeout, name="attempt", clock=self.clock).call)
            )
        if self.breaker is not None:
            if self.attempt_timeout is not None:  # a probe's lease follows its attempt
                self.breaker.expect_attempts(self.attempt_timeout)
            layers.append(_wrap(self.breaker.call))
        if self.retry is not None:
            layers.append(_wrap(self.retry.call))
        if self.timeout is not None:
            # With an attempt timeout, every wait inside is already cut to the time left
            # (attempts by their timer, backoff by the retry): publishing the deadline is
            # enough, and saves arming a second timer on every call.
            total = (
                DeadlineMark(self.timeout, clock=self.clock).call
                if self.attempt_timeout is not None
                else Deadline(self.timeout, name="total", clock=self.clock).call
            )
            layers.append(_wrap(total))
        if self.bulkhead is not None:
            layers.append(_wrap(self.bulkhead.call))
        if self.fallback is not None:
            layers.append(_wrap(self.fallback.call))
        object.__setattr__(self, "_layers", tuple(layers))

    def wrap(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """The composed callable (no `functools.wraps`, for the fastest path)."""
        composed: Layer = fn
        for layer in self._layers:
            composed = layer(composed)
        return composed

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through every configured layer."""
        return await self.wrap(fn)(*args, **kwargs)

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function."""
        return functools.wraps(fn)(self.wrap(fn))


def _wrap(call: Callable[..., Awaitable[Any]]) -> Callable[[Layer], Layer]:
    def layer(inner: Layer) -> Layer:
        return functools.partial(call, inner)

    return layer
