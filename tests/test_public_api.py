from __future__ import annotations

import pickle
from types import ModuleType

import pytest

import firebreak as fb
from firebreak import errors

EXPECTED = {
    "AgentDefaults", "AgentSpec", "BlastRadius", "Reliability", "Workflow",
    "CheckpointStore", "Context", "Engine", "InvalidInput", "MemoryStore", "RunResult",
    "RunNotFound", "RunStatus", "SQLiteStore", "SharedState", "StepStatus", "open_store",
    "resume", "run", "PoisonTask", "BusError",
    "BreakerPolicy", "BreakerRegistry", "Bulkhead", "CircuitBreaker", "CircuitOpenError",
    "Clock", "ConfigError", "Deadline", "DeadlineExceeded", "DefinitionError", "Fallback",
    "FallbackExhausted", "FirebreakError", "InvalidOutput", "LeaseHeld", "NeedsHuman",
    "Overloaded", "Permanent", "Pipeline", "Rejected", "Retry", "RetryBudget", "RetryInfo",
    "StaleLease", "StateConflict", "StepTimeout", "StoreCorrupt", "StoreError", "SystemClock",
    "Timeout", "Transient", "__version__", "breakers", "current_deadline", "events",
    "retry_info", "system_clock", "time_left",
}  # fmt: skip


def test_all_is_exactly_the_public_api() -> None:
    assert set(fb.__all__) == EXPECTED
    assert list(fb.__all__) == sorted(fb.__all__), "__all__ is kept sorted"
    public = {
        name
        for name, value in vars(fb).items()
        if not name.startswith("_") and not isinstance(value, ModuleType)
    }
    assert public | {"events", "__version__"} == set(fb.__all__)


def test_every_exported_name_resolves() -> None:
    for name in fb.__all__:
        assert getattr(fb, name) is not None


def test_version_is_a_string() -> None:
    assert fb.__version__.count(".") >= 2


def test_every_error_derives_from_the_root() -> None:
    for name in errors.__all__:
        assert issubclass(getattr(errors, name), fb.FirebreakError)


def test_timeouts_are_builtin_timeouts_and_config_errors_are_value_errors() -> None:
    assert issubclass(fb.StepTimeout, TimeoutError)
    assert issubclass(fb.DeadlineExceeded, TimeoutError)
    assert issubclass(fb.ConfigError, ValueError)
    assert issubclass(fb.DefinitionError, ValueError)


@pytest.mark.parametrize(
    "error",
    [
        fb.CircuitOpenError("ocr", retry_after=2.5),
        fb.Overloaded("reports", limit=4),
        fb.StepTimeout("slow", timeout=3.0),
        fb.DeadlineExceeded("late", timeout=1.0),
        fb.InvalidOutput("amount must be positive"),
        fb.InvalidInput("amount: field required"),
        fb.FallbackExhausted([TimeoutError("a"), fb.InvalidOutput("b")]),
        fb.NeedsHuman("ambiguous PO", suggestions=["PO-1", "PO-2"]),
        fb.ConfigError("attempts", "must be >= 1"),
        fb.DefinitionError("cycle: a -> b -> a", agent="a"),
        fb.LeaseHeld("run-1", owner="host-a", expires_at=12.0),
        fb.StaleLease("run-1", token=3),
        fb.RunNotFound("no run 'x'", id="x"),
        fb.StateConflict("run-1", expected=1, actual=2),
    ],
)
def test_errors_survive_pickling_with_their_attributes(error: fb.FirebreakError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert str(copy) == str(error)
    assert vars(copy) == vars(error) or str(vars(copy)) == str(vars(error))


def test_circuit_open_error_carries_breaker_and_retry_after() -> None:
    err = fb.CircuitOpenError("ocr", retry_after=2.5)
    assert err.breaker == "ocr"
    assert err.retry_after == 2.5
    assert "ocr" in str(err)
