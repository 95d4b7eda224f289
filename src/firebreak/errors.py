"""The firebreak error tree.

Every error firebreak raises derives from :class:`FirebreakError`; builtins are
subclassed where the meaning is the same, so ``except TimeoutError`` still works::

    FirebreakError
    ├── ConfigError (ValueError)            a policy or breaker built with a bad value
    │   └── DefinitionError                 an invalid workflow definition (names the agent)
    ├── Transient                           marker: retrying may help
    ├── Permanent                           marker: retrying cannot help
    │   └── PoisonTask                      a step's bus task was dead-lettered
    ├── Rejected                            the call was refused before it started
    │   ├── CircuitOpenError                the service's breaker is open (retry_after)
    │   └── Overloaded                      a bulkhead is full: load shed at once
    ├── StepTimeout (TimeoutError)          an attempt or block ran past its time
    │   └── DeadlineExceeded                ... because the inherited deadline ran out
    ├── InvalidInput (ValueError)           a run's input failed the workflow's schema
    ├── InvalidOutput                       output failed validation (never retried as is)
    ├── FallbackExhausted                   the primary and every fallback failed
    ├── NeedsHuman                          a person must decide (suggestions attached)
    ├── RunNotFound (KeyError)              no run, dead letter or review item with that id
    ├── BusError                            the task bus could not be reached when set up
    └── StoreError                          the checkpoint store failed or refused
        ├── LeaseHeld                       another orchestrator holds the run's lease
        ├── StaleLease                      a commit carried an outdated fencing token
        ├── StateConflict (Transient)       shared-state compare-and-set lost a race
        └── StoreCorrupt                    the store's file or schema is not ours / too new

Errors carry their data as attributes and survive ``pickle`` (``__reduce__``), so a
failed run's error can be stored in the dead-letter queue and read back intact.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = [
    "BusError",
    "CircuitOpenError",
    "ConfigError",
    "DeadlineExceeded",
    "DefinitionError",
    "FallbackExhausted",
    "FirebreakError",
    "InvalidInput",
    "InvalidOutput",
    "LeaseHeld",
    "NeedsHuman",
    "Overloaded",
    "Permanent",
    "PoisonTask",
    "Rejected",
    "RunNotFound",
    "StaleLease",
    "StateConflict",
    "StepTimeout",
    "StoreCorrupt",
    "StoreError",
    "Transient",
]


class FirebreakError(Exception):
    """Root of every error firebreak raises."""

    def __init__(self, message: str = "", **attrs: Any) -> None:
        super().__init__(message)
        self._attrs = attrs
        for key, value in attrs.items():
            setattr(self, key, value)

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild through a helper so keyword attributes survive pickling.
        return (_rebuild, (type(self), str(self), self._attrs))


def _rebuild(cls: type[FirebreakError], message: str, attrs: dict[str, Any]) -> FirebreakError:
    err = cls.__new__(cls)
    FirebreakError.__init__(err, message, **attrs)
    return err


class ConfigError(FirebreakError, ValueError):
    """A policy, breaker or other object was built with an invalid value.

    Attributes:
        field: the name of the offending option.
    """

    field: str

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", field=field)


class DefinitionError(FirebreakError, ValueError):
    """A workflow definition is invalid; raised when it is defined, never at run time.

    Attributes:
        agent: the agent the problem is about, or ``None`` for the workflow as a whole.
    """

    agent: str | None

    def __init__(self, message: str, *, agent: str | None = None) -> None:
        super().__init__(message, agent=agent)


class Transient(FirebreakError):
    """Raise (or subclass) to say: this failure is temporary, retrying may help."""


class Permanent(FirebreakError):
    """Raise (or subclass) to say: this failure is final, never retry it."""


class PoisonTask(Permanent):
    """A step's task went to the bus's dead letters (it kept killing workers, or was unreadable).

    Attributes:
        deliveries: how many times it was delivered.
    """

    deliveries: int

    def __init__(self, message: str, *, deliveries: int) -> None:
        super().__init__(message, deliveries=deliveries)


class Rejected(FirebreakError):
    """A call was refused before it started, to protect a service or the caller.

    Attributes:
        retry_after: seconds after which trying again may succeed, if known.
    """

    retry_after: float | None


class CircuitOpenError(Rejected):
    """The breaker of a service is open (or its half-open probes are all taken).

    Attributes:
        breaker: the breaker's name (one per external service).
        retry_after: seconds until the breaker lets a probe through.
    """

    breaker: str

    def __init__(self, breaker: str, *, retry_after: float | None) -> None:
        wait = f"; retry after {retry_after:.3g}s" if retry_after is not None else ""
        super().__init__(
            f"circuit {breaker!r} is open{wait}", breaker=breaker, retry_after=retry_after
        )


class Overloaded(Rejected):
    """A bulkhead is full: the call was shed instead of queued without bound.

    Attributes:
        bulkhead: the bulkhead's name.
        limit: its concurrency limit.
    """

    bulkhead: str
    limit: int

    def __init__(self, bulkhead: str, *, limit: int, reason: str = "full") -> None:
        super().__init__(
            f"bulkhead {bulkhead!r} overloaded ({reason}, limit {limit})",
            bulkhead=bulkhead,
            limit=limit,
            reason=reason,
            retry_after=None,
        )


class StepTimeout(FirebreakError, TimeoutError):
    """An attempt, step or block ran past its time limit.

    Attributes:
        timeout: the limit in seconds that applied.
    """

    timeout: float

    def __init__(self, message: str, *, timeout: float) -> None:
        super().__init__(message, timeout=timeout)


class DeadlineExceeded(StepTimeout):
    """The inherited deadline (of the run or an outer block) ran out."""


class InvalidInput(FirebreakError, ValueError):
    """A run's input failed the workflow's ``input=`` schema; the run was rejected unrun.

    Attributes:
        detail: what the validator said.
    """

    detail: str

    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid input: {detail}", detail=detail)


class InvalidOutput(FirebreakError):
    """A call returned output that failed validation.

    It is not retried with the same call: the fallback chain runs instead.

    Attributes:
        detail: what the validator said.
    """

    detail: str

    def __init__(self, detail: str) -> None:
        super().__init__(f"invalid output: {detail}", detail=detail)


class FallbackExhausted(FirebreakError):
    """The primary call and every fallback failed; ``errors`` holds each failure in order."""

    errors: list[BaseException]

    def __init__(self, errors: Sequence[BaseException]) -> None:
        kinds = ", ".join(type(e).__name__ for e in errors)
        super().__init__(f"all {len(errors)} alternatives failed: {kinds}", errors=list(errors))


class NeedsHuman(FirebreakError):
    """Raised by an agent to hand the decision to a person (the manual-review queue).

    Attributes:
        suggestions: candidate answers the reviewer can pick from.
    """

    suggestions: list[Any]

    def __init__(self, reason: str, *, suggestions: Sequence[Any] = ()) -> None:
        super().__init__(reason, suggestions=list(suggestions))


class RunNotFound(FirebreakError, KeyError):
    """No run (or dead-letter entry, or review item) has the id asked for.

    Attributes:
        id: the id that was looked up.
    """

    id: str

    def __init__(self, message: str, *, id: str) -> None:  # noqa: A002 - the record's id
        super().__init__(message, id=id)

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BusError(FirebreakError):
    """The task bus could not be reached, or refused the connection, when it was set up.

    Once set up, every bus rides out an outage itself (it reconnects and reads again).
    """


class StoreError(FirebreakError):
    """The checkpoint store failed or refused an operation."""


class LeaseHeld(StoreError):
    """Another orchestrator holds an unexpired lease on the run.

    Attributes:
        run_id: the run.
        owner: who holds the lease.
        expires_at: wall-clock time (epoch seconds) the lease ends unless renewed.
    """

    run_id: str
    owner: str
    expires_at: float

    def __init__(self, run_id: str, *, owner: str, expires_at: float) -> None:
        super().__init__(
            f"run {run_id!r} is leased by {owner!r}",
            run_id=run_id,
            owner=owner,
            expires_at=expires_at,
        )


class StaleLease(StoreError):
    """A write carried a fencing token older than the run's current one: refused.

    Attributes:
        run_id: the run.
        token: the stale token that was presented.
    """

    run_id: str
    token: int

    def __init__(self, run_id: str, *, token: int) -> None:
        super().__init__(
            f"run {run_id!r}: lease token {token} is stale", run_id=run_id, token=token
        )


class StateConflict(StoreError, Transient):
    """A compare-and-set of shared state found another version than expected.

    Attributes:
        run_id: the run.
        expected: the version the writer read.
        actual: the version the store holds.
    """

    run_id: str
    expected: int
    actual: int

    def __init__(self, run_id: str, *, expected: int, actual: int) -> None:
        super().__init__(
            f"run {run_id!r}: shared state is at version {actual}, not {expected}",
            run_id=run_id,
            expected=expected,
            actual=actual,
        )


class StoreCorrupt(StoreError):
    """The store's file or schema is damaged, foreign, or from a newer firebreak."""
