"""firebreak: keep multi-agent (LLM) workflows alive when their parts fail.

The public API is re-exported here; import from `firebreak`, not from its modules.

>>> import firebreak as fb
>>> @fb.Retry(attempts=3, on=TimeoutError)
... async def call_model(prompt: str) -> str:
...     return prompt
"""

from firebreak import events
from firebreak._version import __version__
from firebreak.clock import Clock, SystemClock, system_clock
from firebreak.engine import Context, Engine, RunResult, SharedState, resume, run
from firebreak.errors import (
    CircuitOpenError,
    ConfigError,
    DeadlineExceeded,
    DefinitionError,
    FallbackExhausted,
    FirebreakError,
    InvalidInput,
    InvalidOutput,
    LeaseHeld,
    NeedsHuman,
    Overloaded,
    Permanent,
    PoisonTask,
    Rejected,
    RunNotFound,
    StaleLease,
    StateConflict,
    StepTimeout,
    StoreCorrupt,
    StoreError,
    Transient,
)
from firebreak.resilience import (
    BreakerPolicy,
    BreakerRegistry,
    Bulkhead,
    CircuitBreaker,
    Deadline,
    Fallback,
    Pipeline,
    Retry,
    RetryBudget,
    RetryInfo,
    Timeout,
    breakers,
    current_deadline,
    retry_info,
    time_left,
)
from firebreak.store import (
    CheckpointStore,
    MemoryStore,
    RunStatus,
    SQLiteStore,
    StepStatus,
    open_store,
)
from firebreak.workflow import AgentDefaults, AgentSpec, BlastRadius, Reliability, Workflow

__all__ = [
    "AgentDefaults",
    "AgentSpec",
    "BlastRadius",
    "BreakerPolicy",
    "BreakerRegistry",
    "Bulkhead",
    "CheckpointStore",
    "CircuitBreaker",
    "CircuitOpenError",
    "Clock",
    "ConfigError",
    "Context",
    "Deadline",
    "DeadlineExceeded",
    "DefinitionError",
    "Engine",
    "Fallback",
    "FallbackExhausted",
    "FirebreakError",
    "InvalidInput",
    "InvalidOutput",
    "LeaseHeld",
    "MemoryStore",
    "NeedsHuman",
    "Overloaded",
    "Permanent",
    "Pipeline",
    "PoisonTask",
    "Rejected",
    "Reliability",
    "Retry",
    "RetryBudget",
    "RetryInfo",
    "RunNotFound",
    "RunResult",
    "RunStatus",
    "SQLiteStore",
    "SharedState",
    "StaleLease",
    "StateConflict",
    "StepStatus",
    "StepTimeout",
    "StoreCorrupt",
    "StoreError",
    "SystemClock",
    "Timeout",
    "Transient",
    "Workflow",
    "__version__",
    "breakers",
    "current_deadline",
    "events",
    "open_store",
    "resume",
    "retry_info",
    "run",
    "system_clock",
    "time_left",
]
