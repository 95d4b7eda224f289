"""Circuit breakers, one per external service, shared by every caller through a registry.

>>> import firebreak as fb
>>> ocr = fb.breakers.get("ocr-api")            # the same object for every caller
>>> @ocr
... async def extract(scan: bytes) -> str:
...     return "text"
"""

from __future__ import annotations

import dataclasses
import functools
import random
from collections.abc import Awaitable, Callable, Iterator
from datetime import timedelta
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

from firebreak.clock import Clock, system_clock
from firebreak.errors import CircuitOpenError, ConfigError, DeadlineExceeded
from firebreak.events import CallRejected, emit
from firebreak.resilience._scopes import TaskScopes
from firebreak.resilience.breaker_state import BreakerPolicy, BreakerStore, LocalBreakerState, State
from firebreak.resilience.classify import ErrorFilter, is_permanent, matcher, retry_after_of
from firebreak.resilience.timeout import as_seconds

__all__ = ["BreakerRegistry", "CircuitBreaker", "breakers"]

P = ParamSpec("P")
T = TypeVar("T")


def _counted(exc: BaseException) -> bool:
    # The caller's own deadline running out says nothing of the service (the attempt may
    # not even have started): only the attempt's own timeout (`StepTimeout`) counts.
    return not is_permanent(exc) and not isinstance(exc, DeadlineExceeded)


class CircuitBreaker:
    """A closed / open / half-open breaker in front of one service.

    Closed, it counts outcomes in a sliding time window and opens when the failure rate
    (or slow-call rate) reaches its threshold over at least `minimum_calls` calls — or,
    in consecutive mode, after N failures in a row. Open, it rejects every call at once
    with `CircuitOpenError(retry_after=...)`. When the open time is up it lets
    `half_open_probes` probes through, each a lease that expires; all succeed → closed,
    any fails → open again for longer. Cancellation and errors that `counts` rejects
    (by default `Permanent`, non-transient 4xx and `DeadlineExceeded`, the caller's own
    deadline running out) are neither success nor failure.

    Options are those of `BreakerPolicy`, given as keywords or as ``policy=``.
    """

    __slots__ = ("_counts", "_local", "_scopes", "_slow", "_state", "clock", "name", "policy")

    def __init__(
        self,
        name: str,
        *,
        policy: BreakerPolicy | None = None,
        counts: ErrorFilter = _counted,
        clock: Clock = system_clock,
        rng: random.Random | None = None,
        state: BreakerStore | None = None,
        **options: Any,
    ) -> None:
        policy = policy or BreakerPolicy()
        if options:
            try:
                policy = dataclasses.replace(policy, **options)
            except TypeError as exc:
                unknown = sorted(set(options) - {f.name for f in dataclasses.fields(policy)})
                raise ConfigError(", ".join(unknown), "not a circuit breaker option") from exc
        self.name = name
        self.policy = policy
        self.clock = clock
        self._counts = matcher(counts)
        slow = policy.slow_call_duration
        self._slow = None if slow is None else as_seconds(slow)
        self._state: BreakerStore = state or LocalBreakerState(
            name, policy, clock=clock, rng=rng or random.Random()
        )
        self._local = self._state if isinstance(self._state, LocalBreakerState) else None
        self._scopes: TaskScopes[tuple[int, float]] = TaskScopes()

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.name!r}, state={self.state!r})"

    def expect_attempts(self, seconds: float | timedelta) -> None:
        """Say that calls through this breaker are attempts of at most `seconds`.

        A half-open probe's lease then lasts that long and a second more (unless the
        policy sets ``probe_lease``): a slow probe that is still running keeps its slot,
        one that was lost (its process died) frees it soon after. With several callers,
        the longest attempt counts. `Pipeline` and the workflow engine say it for you.
        """
        hook = getattr(self._state, "expect_attempts", None)
        if hook is not None:  # a store of your own may not follow attempts
            hook(as_seconds(seconds))

    @property
    def state(self) -> State:
        """``closed``, ``open`` or ``half_open``."""
        return self._state.current()

    async def _acquire(self) -> int:
        try:
            return await self._state.acquire()
        except CircuitOpenError as exc:
            reason = "open" if self._state.current() == "open" else "half_open"
            emit(CallRejected(source=self.name, kind="breaker", reason=reason))
            exc.__traceback__ = None
            raise

    async def _settle(self, ticket: int, exc: BaseException | None, start: float) -> None:
        if exc is None:
            slow = self._slow is not None and self.clock.now() - start >= self._slow
            await self._state.record(ticket, failed=False, slow=slow, retry_after=None)
        elif isinstance(exc, Exception) and self._counts(exc):
            retry_after = retry_after_of(exc, self.clock.wall())
            await self._state.record(ticket, failed=True, slow=False, retry_after=retry_after)
        else:
            await self._state.release(ticket)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` if the breaker admits it."""
        local = self._local
        if local is not None and local._state == "closed":  # noqa: SLF001 - the hot path
            # Closed and in-process: no coroutine hops; outcomes go straight to the window.
            start = self.clock.now()
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                await self._settle(0, exc, start)
                raise
            slow = self._slow is not None and self.clock.now() - start >= self._slow
            local.note(0, failed=False, slow=slow, retry_after=None)
            return result
        ticket = await self._acquire()
        start = self.clock.now()
        try:
            result = await fn(*args, **kwargs)
        except BaseException as exc:
            await self._settle(ticket, exc, start)
            raise
        await self._settle(ticket, None, start)
        return result

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function."""
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return wrapper

    async def __aenter__(self) -> CircuitBreaker:
        ticket = await self._acquire()
        self._scopes.push((ticket, self.clock.now()))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        ticket, start = self._scopes.pop()
        await self._settle(ticket, exc, start)


class BreakerRegistry:
    """One breaker per service name, so every caller of a service shares its breaker.

    `get` creates the breaker on first use with the registry's default policy (or the
    one given); asking again for the same name with a different policy is an error, not a
    silent second breaker.
    """

    def __init__(
        self,
        *,
        policy: BreakerPolicy | None = None,
        clock: Clock = system_clock,
        store: Callable[[str, BreakerPolicy], BreakerStore] | None = None,
        seed: int | str | None = None,
    ) -> None:
        self.policy = policy or BreakerPolicy()
        self.clock = clock
        self._store = store
        self._seed = seed  # each breaker's open-time jitter seeded from it and its name
        self._breakers: dict[str, CircuitBreaker] = {}

    def get(self, name: str, *, policy: BreakerPolicy | None = None) -> CircuitBreaker:
        """The breaker of service `name`, created on first use."""
        breaker = self._breakers.get(name)
        if breaker is not None:
            if policy is not None and policy != breaker.policy:
                raise ConfigError("policy", f"breaker {name!r} already exists with another policy")
            return breaker
        policy = policy or self.policy
        state = self._store(name, policy) if self._store else None
        rng = None if self._seed is None else random.Random(f"{self._seed}/{name}")
        breaker = CircuitBreaker(name, policy=policy, clock=self.clock, state=state, rng=rng)
        self._breakers[name] = breaker
        return breaker

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(list(self._breakers.values()))

    def __len__(self) -> int:
        return len(self._breakers)


breakers = BreakerRegistry()
"""The process-wide registry: ``firebreak.breakers.get("ocr-api")``."""
