"""Layer 6: the orchestrator that runs workflows against a store, and its executors."""

from firebreak.engine.context import Context, SharedState
from firebreak.engine.executor import (
    Executor,
    LocalExecutor,
    StepCall,
    StepOutcome,
    current_step,
)
from firebreak.engine.orchestrator import Engine, resume, run
from firebreak.engine.result import RunResult

__all__ = [
    "Context",
    "Engine",
    "Executor",
    "LocalExecutor",
    "RunResult",
    "SharedState",
    "StepCall",
    "StepOutcome",
    "current_step",
    "resume",
    "run",
]
