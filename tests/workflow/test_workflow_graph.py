"""The workflow as a graph: registration, forward references, order and blast radius."""

from __future__ import annotations

from typing import Any

import pytest
from workflow_helpers import raises_for

from firebreak.errors import DefinitionError
from firebreak.workflow import AgentDefaults, AgentSpec, BlastRadius, Workflow


def invoice_workflow() -> Workflow:
    """extract -> validate -> {match_po (optional), tax} -> post."""
    wf = Workflow("invoice", deadline=300, defaults=AgentDefaults(timeout=30))

    @wf.agent(timeout=10)
    async def extract(ctx: Any, invoice: dict[str, Any]) -> dict[str, Any]:
        return invoice

    @wf.agent(after=[extract])
    async def validate(ctx: Any, extract: dict[str, Any]) -> dict[str, Any]:
        return extract

    @wf.agent(after=[validate], critical=False, default=None)
    async def match_po(ctx: Any, validate: dict[str, Any]) -> str | None:
        return None

    @wf.agent(after=["validate"])
    async def tax(ctx: Any, validate: dict[str, Any]) -> float:
        return 0.0

    @wf.agent(after=[validate, match_po, tax])
    async def post(ctx: Any, validate: Any, match_po: Any, tax: Any) -> None: ...

    return wf


async def root(ctx: Any, data: Any) -> Any: ...


async def a(ctx: Any, c: Any) -> Any: ...


async def b(ctx: Any, a: Any) -> Any: ...


async def c(ctx: Any, b: Any) -> Any: ...


def test_decorator_returns_the_function_unchanged() -> None:
    wf = Workflow("w")
    decorated = wf.agent(timeout=5)(root)
    assert decorated is root
    assert wf["root"].fn is root


def test_bare_decorator_registers_with_defaults() -> None:
    wf = Workflow("w", defaults=AgentDefaults(timeout=7))
    assert wf.agent(root) is root
    assert wf["root"].timeout == 7.0


def test_add_returns_the_spec_and_applies_workflow_defaults() -> None:
    wf = Workflow("w", defaults=AgentDefaults(timeout=12))
    spec = wf.add(root, name="fetch")
    assert isinstance(spec, AgentSpec)
    assert wf["fetch"] is spec
    assert spec.timeout == 12.0


def test_after_accepts_functions_specs_and_names() -> None:
    wf = Workflow("w")
    root_spec = wf.add(root, name="first")

    async def by_fn(ctx: Any, first: Any) -> None: ...
    async def by_spec(ctx: Any, first: Any) -> None: ...
    async def by_name(ctx: Any, first: Any) -> None: ...

    wf.add(by_fn, after=[root])  # the function registered under name="first"
    wf.add(by_spec, after=[root_spec])
    wf.add(by_name, after=["first"])
    assert {wf[f].after for f in ("by_fn", "by_spec", "by_name")} == {("first",)}


def test_lookup_accepts_function_spec_and_name() -> None:
    wf = invoice_workflow()
    spec = wf["tax"]
    assert wf[spec.fn] is spec
    assert wf[spec] is spec
    assert spec.fn in wf
    assert "tax" in wf
    assert "nope" not in wf
    assert 42 not in wf
    with pytest.raises(KeyError, match="nope"):
        wf["nope"]


def test_duplicate_agent_name_is_refused() -> None:
    wf = Workflow("w")
    wf.add(root)
    with raises_for("root", "duplicate"):
        wf.add(root)


def test_unknown_dependency_is_refused_and_named() -> None:
    wf = Workflow("w")
    with raises_for("b", "unknown dependency 'a'", "from_specs"):
        wf.add(b, after=["a"])


def test_dependency_on_an_unregistered_function_is_refused() -> None:
    wf = Workflow("w")
    with raises_for("b", "is not an agent of workflow 'w'"):
        wf.add(b, after=[a])


def test_dependency_on_a_function_registered_twice_is_ambiguous() -> None:
    wf = Workflow("w")
    wf.add(root, name="one")
    wf.add(root, name="two")

    async def use(ctx: Any, one: Any) -> None: ...

    with raises_for("use", "registered as ['one', 'two']"):
        wf.add(use, after=[root])


def test_frozen_workflow_refuses_new_agents() -> None:
    wf = Workflow("w")
    wf.add(root)
    assert wf.freeze() is wf
    assert wf.frozen

    async def more(ctx: Any, root: Any) -> None: ...

    with raises_for("more", "frozen"):
        wf.add(more, after=["root"])


def test_from_specs_accepts_forward_references() -> None:
    async def later(ctx: Any, first: Any) -> None: ...

    specs = [AgentSpec.of(later, after=["first"]), AgentSpec.of(root, name="first")]
    wf = Workflow.from_specs("w", specs, deadline=60)
    assert wf.order() == ("first", "later")
    assert wf.deadline == 60.0


def test_from_specs_prints_the_cycle_in_data_flow_order() -> None:
    specs = [AgentSpec.of(a, after=["c"]), AgentSpec.of(b, after=["a"])]
    specs.append(AgentSpec.of(c, after=["b"]))
    with raises_for("a", "cycle: a -> b -> c -> a"):
        Workflow.from_specs("w", specs)


def test_from_specs_finds_a_cycle_downstream_of_a_root() -> None:
    async def a(ctx: Any, root: Any, c: Any) -> None: ...

    specs = [AgentSpec.of(root)]
    specs += [AgentSpec.of(a, after=["root", "c"]), AgentSpec.of(b, after=["a"])]
    specs.append(AgentSpec.of(c, after=["b"]))
    with raises_for("a", "cycle: a -> b -> c -> a"):
        Workflow.from_specs("w", specs)


def test_from_specs_refuses_unknown_dependency() -> None:
    with raises_for("b", "unknown dependency 'a'"):
        Workflow.from_specs("w", [AgentSpec.of(b, after=["a"])])


def test_from_specs_refuses_duplicate_names() -> None:
    with raises_for("root", "duplicate"):
        Workflow.from_specs("w", [AgentSpec.of(root), AgentSpec.of(root)])


def test_from_specs_refuses_things_that_are_not_specs() -> None:
    with pytest.raises(DefinitionError, match="AgentSpec"):
        Workflow.from_specs("w", [root])  # type: ignore[list-item]


def test_order_is_topological_and_follows_definition() -> None:
    wf = invoice_workflow()
    assert wf.order() == ("extract", "validate", "match_po", "tax", "post")
    assert [s.name for s in wf] == list(wf.order())
    assert len(wf) == 5


def test_from_specs_order_is_deterministic_given_order_as_tie_break() -> None:
    async def x(ctx: Any, root: Any) -> None: ...
    async def y(ctx: Any, root: Any) -> None: ...

    specs = [AgentSpec.of(y, after=["root"]), AgentSpec.of(x, after=["root"]), AgentSpec.of(root)]
    assert Workflow.from_specs("w", specs).order() == ("root", "y", "x")


def test_levels_group_agents_whose_dependencies_are_in_earlier_levels() -> None:
    assert invoice_workflow().levels() == (
        ("extract",),
        ("validate",),
        ("match_po", "tax"),
        ("post",),
    )
    assert Workflow("empty").levels() == ()


def test_dependents_are_transitive_and_in_order() -> None:
    wf = invoice_workflow()
    assert wf.dependents("validate") == ("match_po", "tax", "post")
    assert wf.dependents(wf["extract"].fn) == ("validate", "match_po", "tax", "post")
    assert wf.dependents("post") == ()


def test_blast_radius_of_critical_agent_fails_run_and_skips_dependents() -> None:
    assert invoice_workflow().blast_radius("validate") == BlastRadius(
        agent="validate",
        fails_run=True,
        skipped=("match_po", "tax", "post"),
        degraded=(),
        degraded_inputs=(),
    )


def test_blast_radius_of_optional_agent_degrades_it_and_its_direct_dependents() -> None:
    assert invoice_workflow().blast_radius("match_po") == BlastRadius(
        agent="match_po",
        fails_run=False,
        skipped=(),
        degraded=("match_po",),
        degraded_inputs=("post",),
    )


def test_blast_radius_of_unknown_agent_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        invoice_workflow().blast_radius("nope")


def test_agents_view_is_read_only() -> None:
    wf = invoice_workflow()
    with pytest.raises(TypeError):
        wf.agents["x"] = wf["tax"]  # type: ignore[index]


def test_workflow_needs_a_name() -> None:
    with pytest.raises(ValueError, match="name"):
        Workflow("")
