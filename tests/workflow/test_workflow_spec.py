"""One agent's definition: options, defaults and the parameter convention."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from typing import Any

import pytest
from workflow_helpers import raises_for

from firebreak.errors import ConfigError
from firebreak.resilience import Retry
from firebreak.workflow import MISSING, AgentDefaults, AgentSpec, Workflow


async def extract(ctx: Any, invoice: dict[str, Any]) -> dict[str, Any]:
    return invoice


async def check(ctx: Any, extract: dict[str, Any]) -> bool:
    return bool(extract)


def test_defaults_fill_unset_options() -> None:
    spec = AgentSpec.of(extract, defaults=AgentDefaults(timeout=5, retry=Retry(attempts=3)))
    assert spec.name == "extract"
    assert spec.timeout == 5.0
    assert spec.retry == Retry(attempts=3)
    assert spec.critical is True
    assert spec.on_exhausted == "fail"
    assert spec.default is MISSING
    assert not spec.has_default


def test_default_timeout_is_sixty_seconds() -> None:
    assert AgentSpec.of(extract).timeout == 60.0


def test_timeout_accepts_timedelta_and_is_stored_in_seconds() -> None:
    assert AgentSpec.of(extract, timeout=timedelta(milliseconds=1500)).timeout == 1.5


def test_explicit_options_override_defaults() -> None:
    spec = AgentSpec.of(
        extract,
        defaults=AgentDefaults(retry=Retry(attempts=3), bulkhead=2),
        name="ocr",
        retry=None,
        bulkhead=8,
        breaker="ocr-api",
        on_exhausted="review",
    )
    assert (spec.name, spec.retry, spec.bulkhead, spec.breaker) == ("ocr", None, 8, "ocr-api")
    assert spec.on_exhausted == "review"


def test_spec_is_frozen() -> None:
    spec = AgentSpec.of(extract)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.timeout = 1.0  # type: ignore[misc]


def test_root_agent_takes_run_input_under_any_name() -> None:
    spec = AgentSpec.of(extract)
    assert spec.is_root
    assert spec.params == ()
    assert spec.input_param == "invoice"
    assert spec.call_kwargs({"n": 1}, {}) == {"invoice": {"n": 1}}


def test_dependent_agent_takes_each_dependency_by_name() -> None:
    async def post(ctx: Any, check: bool, extract: dict[str, Any]) -> None: ...

    spec = AgentSpec.of(post, after=["extract", "check"])
    assert spec.params == ("check", "extract")
    assert spec.input_param is None
    assert spec.call_kwargs("raw", {"extract": 1, "check": 2, "other": 3}) == {
        "check": 2,
        "extract": 1,
    }


def test_dependent_agent_may_take_run_input_as_input_keyword_only() -> None:
    async def post(ctx: Any, extract: dict[str, Any], *, input: Any) -> None: ...  # noqa: A002 - the convention

    spec = AgentSpec.of(post, after=["extract"])
    assert spec.input_param == "input"
    assert spec.call_kwargs("raw", {"extract": 1}) == {"extract": 1, "input": "raw"}


def test_optional_agent_accepts_default_none_as_given() -> None:
    spec = AgentSpec.of(check, after=["extract"], critical=False, default=None)
    assert spec.has_default
    assert spec.default is None


def test_optional_agent_without_default_is_refused() -> None:
    with raises_for("check", "critical=False", "default="):
        AgentSpec.of(check, after=["extract"], critical=False)


def test_optional_by_workflow_defaults_still_needs_its_own_default() -> None:
    with raises_for("extract", "default="):
        AgentSpec.of(extract, defaults=AgentDefaults(critical=False))


def test_critical_agent_with_default_is_refused() -> None:
    with raises_for("extract", "critical", "never be used"):
        AgentSpec.of(extract, default=None)


def test_sync_agent_is_refused() -> None:
    def sync(ctx: Any, invoice: Any) -> None: ...

    with raises_for("sync", "the function must be declared with 'async def', not 'def'"):
        AgentSpec.of(sync)  # type: ignore[arg-type]


def test_object_with_async_call_is_accepted_as_agent() -> None:
    class Agent:
        async def __call__(self, ctx: Any, invoice: Any) -> None: ...

    assert AgentSpec.of(Agent(), name="agent").input_param == "invoice"


def test_callable_without_name_needs_name_option() -> None:
    class Agent:
        async def __call__(self, ctx: Any, invoice: Any) -> None: ...

    with raises_for(None, "pass name="):
        AgentSpec.of(Agent())


@pytest.mark.parametrize("bad", ["x-y", "class", "", "9a"])
def test_name_must_be_an_identifier(bad: str) -> None:
    with raises_for(None, "identifier", repr(bad)):
        AgentSpec.of(extract, name=bad)


def test_name_input_is_reserved() -> None:
    with raises_for("input", "reserved"):
        AgentSpec.of(extract, name="input")


def test_sync_compensate_is_refused() -> None:
    def undo(ctx: Any, output: Any) -> None: ...

    with raises_for("extract", "compensate", "async def"):
        AgentSpec.of(extract, compensate=undo)  # type: ignore[arg-type]


def test_compensate_must_accept_ctx_and_output() -> None:
    async def undo(ctx: Any) -> None: ...

    with raises_for("extract", "compensate", "(ctx, output)"):
        AgentSpec.of(extract, compensate=undo)  # type: ignore[arg-type]


def test_sync_fallback_is_refused() -> None:
    def backup(ctx: Any, invoice: Any) -> None: ...

    with raises_for("extract", "fallback", "async def"):
        AgentSpec.of(extract, fallbacks=[backup])  # type: ignore[list-item]


def test_fallback_with_other_parameters_is_refused() -> None:
    async def backup(ctx: Any, document: Any) -> None: ...

    with raises_for("extract", "fallback", "invoice"):
        AgentSpec.of(extract, fallbacks=[backup])


def test_fallback_with_same_parameters_is_accepted() -> None:
    async def backup(ctx: Any, invoice: Any) -> None: ...

    assert AgentSpec.of(extract, fallbacks=[backup]).fallbacks == (backup,)


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), timedelta(0), "5", True])
def test_timeout_must_be_finite_and_positive(bad: Any) -> None:
    with raises_for("extract", "timeout"):
        AgentSpec.of(extract, timeout=bad)


def test_bad_on_exhausted_is_refused() -> None:
    with raises_for("extract", "on_exhausted", "'explode'"):
        AgentSpec.of(extract, on_exhausted="explode")  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -2, True, 1.5])
def test_bulkhead_must_be_a_positive_int(bad: Any) -> None:
    with raises_for("extract", "bulkhead"):
        AgentSpec.of(extract, bulkhead=bad)


def test_retry_that_is_not_a_retry_policy_is_refused() -> None:
    with raises_for("extract", "retry"):
        AgentSpec.of(extract, retry=object())  # type: ignore[arg-type]


def test_empty_breaker_name_is_refused() -> None:
    with raises_for("extract", "breaker"):
        AgentSpec.of(extract, breaker="")


def test_validate_accepts_model_class_or_sync_callable() -> None:
    class Model:
        pass

    assert AgentSpec.of(extract, validate=Model).validate is Model
    assert AgentSpec.of(extract, validate=lambda out: out).validate is not None


def test_async_validator_is_refused() -> None:
    async def judge(output: Any) -> Any: ...

    with raises_for("extract", "validate", "synchronous"):
        AgentSpec.of(extract, validate=judge)


def test_non_callable_validator_is_refused() -> None:
    with raises_for("extract", "validate"):
        AgentSpec.of(extract, validate=42)  # type: ignore[arg-type]


def test_unknown_option_is_refused() -> None:
    with raises_for("extract", "unknown options", "retries"):
        AgentSpec.of(extract, retries=3)  # type: ignore[call-arg]


def test_root_agent_with_two_parameters_is_refused() -> None:
    async def extract(ctx: Any, invoice: Any, extra: Any) -> None: ...

    with raises_for("extract", "root agent", "(ctx, run_input)"):
        AgentSpec.of(extract)


def test_root_agent_without_input_parameter_is_refused() -> None:
    async def extract(ctx: Any) -> None: ...

    with raises_for("extract", "root agent"):
        AgentSpec.of(extract)


def test_agent_without_context_parameter_is_refused() -> None:
    async def extract() -> None: ...

    with raises_for("extract", "context"):
        AgentSpec.of(extract)


def test_parameter_missing_for_a_dependency_is_refused() -> None:
    async def post(ctx: Any, extract: Any) -> None: ...

    with raises_for("post", "no parameter for dependencies ['check']"):
        AgentSpec.of(post, after=["extract", "check"])


def test_parameter_naming_no_dependency_is_refused() -> None:
    async def post(ctx: Any, extract: Any, cheque: Any) -> None: ...

    with raises_for("post", "['cheque'] name no dependency"):
        AgentSpec.of(post, after=["extract"])


def test_star_args_are_refused() -> None:
    async def post(ctx: Any, **outputs: Any) -> None: ...

    with raises_for("post", "**kwargs"):
        AgentSpec.of(post, after=["extract"])


def test_positional_only_dependency_parameter_is_refused() -> None:
    async def post(ctx: Any, extract: Any, /) -> None: ...

    with raises_for("post", "by name"):
        AgentSpec.of(post, after=["extract"])


def test_dependency_named_twice_is_refused() -> None:
    with raises_for("check", "twice"):
        AgentSpec.of(check, after=["extract", "extract"])


def test_agent_depending_on_itself_is_a_cycle() -> None:
    async def loop(ctx: Any, loop: Any) -> None: ...

    with raises_for("loop", "cycle: loop -> loop"):
        AgentSpec.of(loop, after=["loop"])


def test_after_entry_that_is_not_a_reference_is_refused() -> None:
    with raises_for("check", "after="):
        AgentSpec.of(check, after=[42])  # type: ignore[list-item]


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"timeout": 0}, "timeout"),
        ({"retry": 3}, "retry"),
        ({"bulkhead": 0}, "bulkhead"),
        ({"on_exhausted": "never"}, "on_exhausted"),
    ],
)
def test_bad_agent_defaults_are_refused(options: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        AgentDefaults(**options)
    assert info.value.field == field


def test_workflow_deadline_must_be_finite_and_positive() -> None:
    with pytest.raises(ConfigError, match="deadline"):
        Workflow("w", deadline=0)
    assert Workflow("w", deadline=timedelta(minutes=5)).deadline == 300.0
    assert Workflow("w").deadline is None
