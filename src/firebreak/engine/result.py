"""What a run returns."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from firebreak._fastinit import fast_init
from firebreak.store import RunStatus

__all__ = ["RunResult"]


@fast_init
@dataclass(frozen=True, slots=True, kw_only=True)
class RunResult:
    """The outcome of `run`: status, outputs per agent, and what is missing and why.

    Example:
        >>> result = await fb.run(wf, invoice, run_id="inv-42")
        >>> result.status, result.missing
        ('degraded', {'match_po': 'StepTimeout: timed out after 10s'})
    """

    run_id: str
    """The run."""
    workflow: str
    """The workflow's name."""
    status: RunStatus
    """``succeeded``, ``degraded``, ``failed``, ``paused`` or ``needs_review``."""
    outputs: Mapping[str, Any] = field(default_factory=dict)
    """Output of every agent that succeeded or degraded (degraded: its default)."""
    missing: Mapping[str, str] = field(default_factory=dict)
    """Agents whose output is not real — degraded to a default, skipped — with the reason."""
    error: Mapping[str, Any] | None = None
    """The error that failed the run (type, message, attributes), if it failed; for a
    paused run, the first error that paused it, with its ``agent`` and ``attempts``."""
    failed_agent: str | None = None
    """The critical agent whose failure failed the run."""
    resume_at: float | None = None
    """Wall-clock time a paused run is due to resume."""
    reviews: tuple[str, ...] = ()
    """Ids of the review items the run is waiting for."""
    compensated: tuple[str, ...] = ()
    """Agents whose completed work was undone, in the order it was undone."""
    resumed: bool = False
    """Whether this call continued from checkpoints instead of starting fresh."""
    executed: tuple[str, ...] = ()
    """Agents this call actually ran (empty for a finished run read back from the store)."""

    @property
    def ok(self) -> bool:
        """Whether the run finished with a usable result (succeeded or degraded)."""
        return self.status in (RunStatus.SUCCEEDED, RunStatus.DEGRADED)

    def __getitem__(self, agent: str) -> Any:
        return self.outputs[agent]
