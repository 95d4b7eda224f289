"""One typed event stream: every state change in firebreak is a frozen event.

Primitives and (later) the engine `emit` events to the process-wide `hub`; metrics,
logs, traces and progress bars `subscribe`. Nothing in firebreak fails only in a log line.

>>> from firebreak import events
>>> seen = []
>>> stop = events.subscribe(seen.append)
>>> events.emit(events.FallbackUsed(source="llm", index=1, error_type="TimeoutError"))
>>> stop()
>>> seen[0].index
1
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BreakerBackendChanged",
    "BreakerStateChanged",
    "BudgetExhausted",
    "CallRejected",
    "Event",
    "EventHub",
    "FallbackUsed",
    "GaveUp",
    "QueueChanged",
    "RetryScheduled",
    "RunStateChanged",
    "StepAttempted",
    "StepStateChanged",
    "emit",
    "hub",
    "subscribe",
]

log = logging.getLogger("firebreak.events")

BreakerStateName = Literal["closed", "half_open", "open"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base of every event. `source` names the emitting policy, breaker, bulkhead or agent."""

    source: str
    """The name of whatever emitted the event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(Event):
    """An attempt failed with a retryable error; the next one starts after `delay`."""

    attempt: int
    """The attempt that failed (1-based)."""
    delay: float
    """Seconds until the next attempt."""
    error_type: str
    """Class name of the error that triggered the retry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class GaveUp(Event):
    """Retrying stopped although the error was retryable."""

    attempts: int
    """Attempts made in total."""
    reason: Literal["attempts", "deadline", "budget"]
    """Why: attempts used up, the next sleep would pass the deadline, or no retry budget."""
    error_type: str
    """Class name of the last error."""
    retry_after: float | None = None
    """Seconds the service asked us to wait, when it said so."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetExhausted(Event):
    """A retry budget had no token left: the retry was refused to stop a retry storm."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerStateChanged(Event):
    """A circuit breaker moved between closed, open and half-open."""

    old: BreakerStateName
    """The state before."""
    new: BreakerStateName
    """The state after."""
    reason: str
    """Why, e.g. ``failure rate 0.55 >= 0.5`` or ``probe succeeded``."""
    open_for: float | None = None
    """Seconds the breaker stays open (when `new` is ``open``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerBackendChanged(Event):
    """A shared breaker lost Redis and went local, or got Redis back. `source`: breaker."""

    backend: Literal["redis", "local"]
    """Where the breaker's state is kept from now on."""
    reason: str
    """Why, e.g. the Redis error."""


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRejected(Event):
    """A call was refused at once by a breaker or a bulkhead."""

    kind: Literal["breaker", "bulkhead", "engine"]
    """Which kind of guard refused it (``engine``: a run refused by `Engine(max_in_flight=)`)."""
    reason: str
    """``open``, ``half_open`` (no probe slot), ``full`` or ``wait_timeout``."""


@dataclass(frozen=True, slots=True, kw_only=True)
class FallbackUsed(Event):
    """The primary (or an earlier fallback) failed and fallback number `index` was used."""

    index: int
    """1 for the first fallback, 2 for the second, ..."""
    error_type: str
    """Class name of the error that made the fallback necessary."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStateChanged(Event):
    """A run started, resumed, paused, finished, failed or went to review. `source`: workflow."""

    run_id: str
    """The run."""
    status: str
    """``running``, ``succeeded``, ``degraded``, ``failed``, ``paused`` or ``needs_review``;
    ``interrupted`` when a drive stopped before the run's outcome was recorded (cancelled,
    or the store failed): the run is still ``running`` in the store, to be resumed."""
    reason: str = ""
    """Why, for anything but a plain success."""
    resumed: bool = False
    """Whether the run continued from checkpoints (``running`` only)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepAttempted(Event):
    """One attempt of an agent ended. `source`: the workflow."""

    run_id: str
    """The run."""
    agent: str
    """The agent."""
    attempt: int
    """1 for the first attempt."""
    outcome: Literal["ok", "error", "invalid", "timeout", "rejected", "needs_human"]
    """How it ended (``needs_human``: it raised `NeedsHuman`, a question, not a failure)."""
    duration: float
    """Seconds it took."""
    error_type: str | None = None
    """Class name of the error, when it failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStateChanged(Event):
    """A step was committed, skipped, compensated or sent to review. `source`: workflow."""

    run_id: str
    """The run."""
    agent: str
    """The agent."""
    status: str
    """A `firebreak.store.StepStatus` value."""
    attempts: int = 0
    """Attempts made (0 for a skipped step)."""
    reason: str = ""
    """Why, when the step did not simply succeed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class QueueChanged(Event):
    """An entry was added to or removed from the dead-letter or review queue."""

    queue: Literal["dlq", "review"]
    """Which queue."""
    run_id: str
    """The run the entry belongs to."""
    delta: int
    """+1 added, -1 removed or resolved."""


Handler = Callable[[Event], None]


class EventHub:
    """A synchronous fan-out of events to subscribers.

    A subscriber that raises is logged and skipped: observing must never break the call
    being observed.
    """

    __slots__ = ("_handlers", "active")

    def __init__(self) -> None:
        # A tuple, replaced on change, so emit() iterates without locks or copies.
        self._handlers: tuple[Handler, ...] = ()
        self.active = False
        """Whether anyone listens: hot paths skip building events nobody would see."""

    def subscribe(self, handler: Handler) -> Callable[[], None]:
        """Add `handler`; returns a function that removes it again.

        Raises:
            TypeError: `handler` is a coroutine function: events are delivered at once,
                on the emitter's stack, and a coroutine made of each would never run.
        """
        if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
            getattr(handler, "__call__", None)  # noqa: B004 - an instance's async __call__
        ):
            raise TypeError(
                f"event handlers are called synchronously; {handler!r} is async: hand the "
                "event to a queue or loop.call_soon from a plain function instead"
            )
        self._handlers = (*self._handlers, handler)
        self.active = True

        def unsubscribe() -> None:
            self._handlers = tuple(h for h in self._handlers if h is not handler)
            self.active = bool(self._handlers)

        return unsubscribe

    def emit(self, event: Event) -> None:
        """Deliver `event` to every subscriber, in subscription order."""
        for handler in self._handlers:
            try:
                handler(event)
            except Exception:
                log.exception("event subscriber %r failed on %r", handler, event)


hub = EventHub()
"""The process-wide hub that firebreak's primitives emit to."""


def subscribe(handler: Handler) -> Callable[[], None]:
    """Subscribe `handler` to the process-wide hub; returns the unsubscribe function."""
    return hub.subscribe(handler)


def emit(event: Event) -> None:
    """Emit `event` on the process-wide hub."""
    hub.emit(event)
