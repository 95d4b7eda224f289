"""The records made on every step keep their dataclass behaviour under `fast_init`."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from firebreak._fastinit import fast_init, fast_new, twin
from firebreak.engine.executor import StepCall, StepOutcome, new_outcome, new_step_call
from firebreak.engine.result import RunResult
from firebreak.store import Lease, RunRecord, RunStatus, StepRecord, StepStatus


def test_the_fast_init_keeps_the_signature_defaults_and_checks() -> None:
    rec = StepRecord(run_id="r", agent="a", status="succeeded")
    assert rec.status is StepStatus.SUCCEEDED  # __post_init__ still converts
    assert (rec.output, rec.attempts, rec.seq) == (None, 1, 0)
    with pytest.raises(ValueError, match="attempts"):
        StepRecord(run_id="r", agent="a", status="failed", attempts=-1)
    with pytest.raises(TypeError):
        StepRecord("r", "a", "succeeded")  # type: ignore[misc]  # keyword-only, as before
    with pytest.raises(TypeError):
        StepRecord(run_id="r", agent="a")  # type: ignore[call-arg]  # required, as before
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.output = 1  # type: ignore[misc]
    assert list(inspect.signature(StepRecord).parameters) == [
        f.name for f in dataclasses.fields(StepRecord)
    ]


def test_default_factories_give_each_record_its_own_value() -> None:
    one = RunResult(run_id="a", workflow="w", status=RunStatus.SUCCEEDED)
    two = RunResult(run_id="b", workflow="w", status=RunStatus.SUCCEEDED)
    assert one.outputs == {}
    assert one.outputs is not two.outputs
    assert RunRecord(run_id="r", workflow="w").status is RunStatus.PENDING
    lease = Lease(run_id="r", owner="o", token=1, expires_at=2.0)
    assert lease == Lease(run_id="r", owner="o", token=1, expires_at=2.0)


def test_fast_init_refuses_what_it_cannot_speed_up() -> None:
    @dataclasses.dataclass(slots=True, kw_only=True)
    class Mutable:
        x: int

    with pytest.raises(TypeError, match="frozen"):
        fast_init(Mutable)


def test_fast_new_builds_what_the_keyword_constructor_builds() -> None:
    new_record = fast_new(StepRecord, " ".join(f.name for f in dataclasses.fields(StepRecord)))
    rec = new_record("r", "a", StepStatus.SUCCEEDED, {"n": 1}, 2)
    assert rec == StepRecord(run_id="r", agent="a", status="succeeded", output={"n": 1}, attempts=2)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rec.output = 1  # type: ignore[misc]  # still frozen
    assert type(rec) is StepRecord  # built as its twin, then given its class
    assert new_outcome("succeeded", 7, 1) == StepOutcome(status="succeeded", output=7, attempts=1)
    one = new_step_call("w", None, "r", 1, {})
    two = new_step_call("w", None, "r", 1, {})
    assert one == StepCall(workflow="w", spec=None, run_id="r", run_input=1, inputs={})  # type: ignore[arg-type]
    assert one.degraded == {}
    assert one.degraded is not two.degraded  # a factory per call


def test_a_twin_becomes_its_class_and_only_a_slotted_class_has_one() -> None:
    made = object.__new__(twin(Lease))
    made.run_id, made.owner, made.token, made.expires_at = "r", "me", 3, 9.0
    made.__class__ = Lease
    assert made == Lease(run_id="r", owner="me", token=3, expires_at=9.0)
    assert hash(made) == hash(Lease(run_id="r", owner="me", token=3, expires_at=9.0))
    assert twin(Lease) is twin(Lease)

    @dataclasses.dataclass(frozen=True)
    class Plain:
        x: int

    with pytest.raises(TypeError, match="slotted"):
        twin(Plain)


def test_fast_new_refuses_a_class_without_slots() -> None:
    @dataclasses.dataclass
    class Plain:
        x: int

    with pytest.raises(TypeError, match="slots"):
        fast_new(Plain, "x")


def test_fast_new_refuses_fields_in_another_order_than_the_caller_expects() -> None:
    with pytest.raises(TypeError, match="the caller expects 'agent run_id"):
        fast_new(StepRecord, "agent run_id status output attempts error degraded_reason seq")
