"""Layer 2: resilience primitives, usable alone as decorators or around a block.

Retry (with budget and Retry-After), circuit breakers (shared through a registry),
bulkheads, timeouts and deadlines, fallback chains, and the pipeline composing them.
The exact semantics are those of RESILIENCE.md in the design documents.
"""

from firebreak.resilience.breaker import BreakerRegistry, CircuitBreaker, breakers
from firebreak.resilience.breaker_state import BreakerPolicy, BreakerStore, LocalBreakerState
from firebreak.resilience.budget import RetryBudget
from firebreak.resilience.bulkhead import Bulkhead
from firebreak.resilience.classify import (
    RetryInfo,
    http_status,
    is_permanent,
    is_transient,
    retry_after_of,
    retry_info,
)
from firebreak.resilience.fallback import Fallback
from firebreak.resilience.pipeline import Pipeline
from firebreak.resilience.retry import Attempt, Retry
from firebreak.resilience.timeout import Deadline, Timeout, current_deadline, time_left

__all__ = [
    "Attempt",
    "BreakerPolicy",
    "BreakerRegistry",
    "BreakerStore",
    "Bulkhead",
    "CircuitBreaker",
    "Deadline",
    "Fallback",
    "LocalBreakerState",
    "Pipeline",
    "Retry",
    "RetryBudget",
    "RetryInfo",
    "Timeout",
    "breakers",
    "current_deadline",
    "http_status",
    "is_permanent",
    "is_transient",
    "retry_after_of",
    "retry_info",
    "time_left",
]
