"""Which step an event belongs to, for events that do not say (retries, rejections, ...).

`RetryScheduled`, `GaveUp`, `CallRejected`, `FallbackUsed` and `BudgetExhausted` name
the policy, breaker or bulkhead that emitted them, not the run and agent. The hub
delivers every event synchronously in the task that emits it, and the engine runs a
step's attempts, its retry loop, breaker and fallbacks in one task: so a subscriber
that notes the step of each `StepAttempted` in a context variable (each step task has
its own copy) knows the step of whatever that task emits next. `StepStateChanged`
ends it, for the orchestrator's task, which runs steps of a chain inline one after
another. What a step emits before its first attempt ends has no step yet.
"""

from __future__ import annotations

import contextvars
from dataclasses import dataclass

from firebreak.engine.executor import current_step
from firebreak.events import Event, StepAttempted, StepStateChanged

__all__ = ["Step", "StepTracker"]


@dataclass(frozen=True, slots=True)
class Step:
    """A step of a run: where an event was emitted."""

    workflow: str
    run_id: str
    agent: str


class StepTracker:
    """Follows `StepAttempted` and `StepStateChanged` to say which step a task is in."""

    __slots__ = ("_var",)

    def __init__(self) -> None:
        # One variable per tracker: two subscribers never see each other's notes.
        self._var: contextvars.ContextVar[Step | None] = contextvars.ContextVar(
            f"firebreak_step_{id(self)}", default=None
        )

    def note(self, event: Event) -> None:
        """Update the step of the current context from `event`."""
        if isinstance(event, StepAttempted):
            step = self._var.get()
            if step is None or step.run_id != event.run_id or step.agent != event.agent:
                self._var.set(Step(event.source, event.run_id, event.agent))
        elif isinstance(event, StepStateChanged) and self._var.get() is not None:
            self._var.set(None)

    def current(self) -> Step | None:
        """The step this context is executing (from the engine), else the one last noted."""
        call = current_step()
        if call is not None:
            return Step(call.workflow, call.run_id, call.spec.name)
        return self._var.get()
