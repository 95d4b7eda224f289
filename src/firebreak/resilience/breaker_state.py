"""Where a circuit breaker keeps its state: the storage protocol and the local machine.

`LocalBreakerState` is the whole state machine in process memory.
`firebreak.resilience.redis_breaker` implements the same `BreakerStore` protocol in Redis,
with server-side scripts, so every process shares one breaker per service.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol

from firebreak.clock import Clock
from firebreak.errors import CircuitOpenError, ConfigError
from firebreak.events import BreakerStateChanged, emit
from firebreak.resilience.timeout import as_seconds, duration

__all__ = ["BreakerPolicy", "BreakerStore", "LocalBreakerState", "State"]

State = Literal["closed", "half_open", "open"]


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a breaker opens and how it closes again (defaults from RESILIENCE.md)."""

    window: float | timedelta = 30.0
    """Length of the sliding time window over which rates are computed."""
    buckets: int = 10
    """The window is kept as this many buckets (its resolution)."""
    minimum_calls: int = 20
    """No rate is judged on fewer calls than this in the window."""
    failure_rate: float = 0.5
    """Open when this share of the window's calls failed (0 < rate <= 1)."""
    slow_call_duration: float | timedelta | None = None
    """Calls at least this long count as slow; ``None`` ignores latency."""
    slow_call_rate: float = 1.0
    """Open when this share of the window's calls was slow (0 < rate <= 1)."""
    consecutive_failures: int | None = None
    """Consecutive-failure mode for low-traffic services: open after this many failures
    in a row, ignoring the window rates."""
    open_duration: float | timedelta = 5.0
    """Time open after the first trip; doubles on each trip that follows a failed probe."""
    max_open_duration: float | timedelta = 60.0
    """Upper bound of the open time (before jitter)."""
    open_jitter: float = 0.2
    """Open time is multiplied by uniform(1 - jitter, 1 + jitter) (0 <= jitter < 1)."""
    half_open_probes: int = 1
    """Calls let through when half-open; all must succeed to close (>= 1)."""
    probe_lease: float | timedelta | None = None
    """A probe that has not reported after this long frees its slot for another. ``None``:
    a second more than the longest attempt timeout the breaker is used with (a `Pipeline`'s
    ``attempt_timeout``, an agent's ``timeout``; `CircuitBreaker.expect_attempts`), so a
    slow but live probe keeps its slot and a lost one frees it soon after; 30 s until one
    is known."""

    def __post_init__(self) -> None:
        for name in ("window", "open_duration", "max_open_duration"):
            object.__setattr__(self, name, duration(getattr(self, name), name))
        if self.probe_lease is not None:
            object.__setattr__(self, "probe_lease", duration(self.probe_lease, "probe_lease"))
        if self.slow_call_duration is not None:
            object.__setattr__(
                self, "slow_call_duration", duration(self.slow_call_duration, "slow_call_duration")
            )
        for name in ("failure_rate", "slow_call_rate"):
            value = getattr(self, name)
            if not 0 < value <= 1:
                raise ConfigError(
                    name, f"must be a rate within 0..1 (exclusive of 0), got {value!r}"
                )
        if self.buckets < 1:
            raise ConfigError("buckets", f"must be >= 1, got {self.buckets!r}")
        if self.minimum_calls < 1:
            raise ConfigError("minimum_calls", f"must be >= 1, got {self.minimum_calls!r}")
        if self.consecutive_failures is not None and self.consecutive_failures < 1:
            raise ConfigError(
                "consecutive_failures", f"must be >= 1 or None, got {self.consecutive_failures!r}"
            )
        if self.half_open_probes < 1:
            raise ConfigError(
                "half_open_probes",
                f"must be >= 1, got {self.half_open_probes!r}: the breaker could never close",
            )
        if not 0 <= self.open_jitter < 1:
            raise ConfigError(
                "open_jitter", f"must be within 0..1 (exclusive of 1), got {self.open_jitter!r}"
            )
        if as_seconds(self.max_open_duration) < as_seconds(self.open_duration):
            raise ConfigError("max_open_duration", "must be >= open_duration")

    def open_time(self, trips: int, rng: random.Random, retry_after: float | None) -> float:
        """Seconds to stay open after trip number `trips`, never shorter than `retry_after`."""
        first, most = as_seconds(self.open_duration), as_seconds(self.max_open_duration)
        base = min(most, first * 2.0 ** (trips - 1))
        jittered = base * rng.uniform(1 - self.open_jitter, 1 + self.open_jitter)
        return max(jittered, retry_after or 0.0)


_UNKNOWN_LEASE = 30.0  # a probe's lease before any attempt timeout is known


def lease_of(policy: BreakerPolicy, attempt_timeout: float | None) -> float:
    """Seconds a probe's lease lasts: the policy's, else the attempt timeout and a second."""
    if policy.probe_lease is not None:
        return as_seconds(policy.probe_lease)
    return _UNKNOWN_LEASE if attempt_timeout is None else attempt_timeout + 1.0


class BreakerStore(Protocol):
    """Storage of one breaker's state. A ticket of 0 admits a normal call; >0 is a probe."""

    def current(self) -> State:
        """The state as last known (a shared store may answer from its cache)."""
        ...

    async def acquire(self) -> int:
        """Admit a call (ticket) or raise `CircuitOpenError` with `retry_after`."""
        ...

    async def record(
        self, ticket: int, *, failed: bool, slow: bool, retry_after: float | None
    ) -> None:
        """Report how an admitted call ended."""
        ...

    async def release(self, ticket: int) -> None:
        """The admitted call ended without a verdict (cancelled or an ignored error)."""
        ...


class LocalBreakerState:
    """The breaker state machine in process memory (one event loop, no locks needed)."""

    __slots__ = (
        "_attempts",
        "_calls",
        "_clock",
        "_consecutive",
        "_epochs",
        "_fails",
        "_lease",
        "_next_ticket",
        "_open_until",
        "_probe_ok",
        "_probes",
        "_rng",
        "_slows",
        "_state",
        "_trips",
        "_width",
        "name",
        "policy",
    )

    def __init__(
        self, name: str, policy: BreakerPolicy, *, clock: Clock, rng: random.Random
    ) -> None:
        self.name = name
        self.policy = policy
        self._clock = clock
        self._rng = rng
        self._state: State = "closed"
        self._width = as_seconds(policy.window) / policy.buckets
        n = policy.buckets
        self._epochs = [-1] * n
        self._calls = [0] * n
        self._fails = [0] * n
        self._slows = [0] * n
        self._consecutive = 0
        self._trips = 0
        self._open_until = 0.0
        self._probes: dict[int, float] = {}  # ticket -> lease expiry
        self._probe_ok = 0
        self._next_ticket = 1
        self._attempts: float | None = None  # the longest attempt timeout of the callers
        self._lease = lease_of(policy, None)

    def expect_attempts(self, seconds: float) -> None:
        """Callers' attempts last up to `seconds`: probe leases follow (if not set)."""
        self._attempts = max(self._attempts or 0.0, seconds)
        self._lease = lease_of(self.policy, self._attempts)

    def current(self) -> State:
        """The state now (an open breaker whose time is up reads as half-open)."""
        if self._state == "open" and self._clock.now() >= self._open_until:
            return "half_open"
        return self._state

    async def acquire(self) -> int:
        """Admit a call or raise `CircuitOpenError`."""
        return self.admit()

    async def record(
        self, ticket: int, *, failed: bool, slow: bool, retry_after: float | None
    ) -> None:
        """Count the call's outcome; trip, close or stay as the policy says."""
        self.note(ticket, failed=failed, slow=slow, retry_after=retry_after)

    async def release(self, ticket: int) -> None:
        """Forget an admitted call: a probe's slot is freed for another caller."""
        self._probes.pop(ticket, None)

    # The synchronous core: `CircuitBreaker` calls these directly for a local state,
    # sparing two coroutine frames per call on the hot path.

    def admit(self) -> int:
        """Admit a call (0, or a probe ticket) or raise `CircuitOpenError`."""
        if self._state == "closed":
            return 0
        now = self._clock.now()
        if self._state == "open":
            if now < self._open_until:
                raise CircuitOpenError(self.name, retry_after=self._open_until - now)
            self._move("half_open", "open time elapsed")
        probes = self._probes
        for ticket, expires in list(probes.items()):
            if expires <= now:  # a probe that never reported must not wedge the breaker
                del probes[ticket]
        if len(probes) + self._probe_ok < self.policy.half_open_probes:
            ticket = self._next_ticket
            self._next_ticket += 1
            probes[ticket] = now + self._lease
            return ticket
        retry_after = min(probes.values()) - now if probes else None
        raise CircuitOpenError(self.name, retry_after=retry_after)

    def note(self, ticket: int, *, failed: bool, slow: bool, retry_after: float | None) -> None:
        """Count an admitted call's outcome (see `record`)."""
        if ticket:
            self._record_probe(ticket, failed=failed, retry_after=retry_after)
        elif self._state == "closed":
            self._record_closed(failed=failed, slow=slow, retry_after=retry_after)
        # A call admitted while closed that ends after the breaker opened is ignored.

    def _record_probe(self, ticket: int, *, failed: bool, retry_after: float | None) -> None:
        if self._probes.pop(ticket, None) is None or self._state != "half_open":
            return  # its lease expired, or another probe already decided
        if failed:
            self._trip("probe failed", retry_after)
            return
        self._probe_ok += 1
        if self._probe_ok >= self.policy.half_open_probes:
            self._move("closed", f"{self._probe_ok} probe(s) succeeded")

    def _record_closed(self, *, failed: bool, slow: bool, retry_after: float | None) -> None:
        epoch = int(self._clock.now() / self._width)
        slot = epoch % len(self._epochs)
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._calls[slot] = self._fails[slot] = self._slows[slot] = 0
        self._calls[slot] += 1
        if not failed:
            self._consecutive = 0
            if not slow:
                return
            self._slows[slot] += 1
        else:
            self._fails[slot] += 1
            self._consecutive += 1
        policy = self.policy
        if policy.consecutive_failures is not None:
            if self._consecutive >= policy.consecutive_failures:
                self._trip(f"{self._consecutive} consecutive failures", retry_after)
            return
        oldest = epoch - len(self._epochs)
        calls = fails = slows = 0
        for i, seen in enumerate(self._epochs):
            if seen > oldest:
                calls += self._calls[i]
                fails += self._fails[i]
                slows += self._slows[i]
        if calls < policy.minimum_calls:
            return
        if fails / calls >= policy.failure_rate:
            self._trip(f"failure rate {fails / calls:.2f} >= {policy.failure_rate}", retry_after)
        elif slows / calls >= policy.slow_call_rate:
            self._trip(
                f"slow-call rate {slows / calls:.2f} >= {policy.slow_call_rate}", retry_after
            )

    def _trip(self, reason: str, retry_after: float | None) -> None:
        self._trips += 1
        open_for = self.policy.open_time(self._trips, self._rng, retry_after)
        self._open_until = self._clock.now() + open_for
        self._move("open", reason, open_for)

    def _move(self, new: State, reason: str, open_for: float | None = None) -> None:
        old = self._state
        self._state = new
        self._probes.clear()
        self._probe_ok = 0
        if new == "closed":
            self._trips = 0
            self._consecutive = 0
            self._epochs = [-1] * len(self._epochs)
        elif new == "open":
            self._consecutive = 0
            self._epochs = [-1] * len(self._epochs)
        emit(
            BreakerStateChanged(
                source=self.name, old=old, new=new, reason=reason, open_for=open_for
            )
        )
