"""The invoice demo: every invoice accounted for, one fault schedule for both variants."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

import firebreak as fb
from firebreak.demos.invoice_agents import InvoiceWorld, build_workflow, check_invoice
from firebreak.demos.invoices import BatchReport, VirtualClock, main, run_batch, run_demo
from firebreak.events import StepAttempted
from firebreak.testing import capture_events

N = 100
ROOT = Path(__file__).resolve().parents[2]


async def _batch(*, protected: bool, seed: int = 7) -> tuple[BatchReport, list[StepAttempted]]:
    async with fb.open_store("memory://") as store:
        with capture_events() as seen:
            report = await run_batch(
                "firebreak" if protected else "naive",
                n=N,
                seed=seed,
                store=store,
                protected=protected,
            )
    return report, [e for e in seen if isinstance(e, StepAttempted)]


@pytest.mark.parametrize("protected", [False, True])
async def test_every_invoice_is_accounted_for(protected: bool) -> None:
    report, _ = await _batch(protected=protected)
    ids = [i for v in report.statuses.values() for i in v]
    assert len(ids) == len(set(ids)) == report.accounted == N
    assert report.dlq == report.count("failed")
    assert report.review == report.count("needs_review")


async def test_both_variants_face_the_same_faults() -> None:
    """Naive fails exactly where firebreak saw a first attempt go wrong."""
    naive, _ = await _batch(protected=False)
    safe, attempts = await _batch(protected=True)
    troubled = {
        e.run_id.rsplit("/", 1)[-1] for e in attempts if e.attempt == 1 and e.outcome != "ok"
    }
    assert set(naive.statuses["failed"]) == troubled
    not_ok = set(safe.statuses.get("failed", [])) | set(safe.statuses.get("needs_review", []))
    assert not_ok <= set(naive.statuses["failed"])


async def test_firebreak_succeeds_more_often_than_naive() -> None:
    naive, _ = await _batch(protected=False)
    safe, _ = await _batch(protected=True)
    assert safe.ok > naive.ok
    assert safe.ok >= 0.9 * N
    assert naive.open_entries_of_failed > 0 == safe.open_entries_of_failed


async def test_outcomes_are_a_function_of_the_seed() -> None:
    first, _ = await _batch(protected=True)
    again, _ = await _batch(protected=True)
    other, _ = await _batch(protected=True, seed=8)
    assert first.statuses == again.statuses
    assert first.durations == pytest.approx(again.durations)
    assert other.statuses != first.statuses


async def test_scaled_real_time_gives_the_same_outcomes() -> None:
    virtual = await run_demo(n=20, store="memory://")
    # 1 simulated second = 50 ms of real time: the tightest timeout (15 s) keeps 750 ms of
    # margin, so a machine busy with other work does not flip an outcome.
    scaled = await run_demo(n=20, store="memory://", time_scale=0.05)
    assert [r.statuses for r in scaled] == [r.statuses for r in virtual]


def test_main_prints_the_table_and_the_identity(capsys: pytest.CaptureFixture[str]) -> None:
    main(n=30, store="memory://")
    out = capsys.readouterr().out
    assert "end-to-end success" in out
    assert "= 30 (n = 30) ✓" in out.replace("\n", " ")


def test_the_example_workflow_is_the_demo_workflow() -> None:
    path = ROOT / "examples" / "invoices" / "workflow.py"
    spec = importlib.util.spec_from_file_location("invoice_example", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    example: fb.Workflow = module.invoice_workflow
    demo = build_workflow(InvoiceWorld(7), protected=True)
    assert example.order() == demo.order()
    assert example.input_schema is demo.input_schema is check_invoice
    for name, agent in example.agents.items():
        other = demo.agents[name]
        assert (agent.after, agent.critical, agent.breaker, agent.timeout) == (
            other.after,
            other.critical,
            other.breaker,
            other.timeout,
        )
        assert bool(agent.compensate) == bool(other.compensate)
        assert len(agent.fallbacks) == len(other.fallbacks)


async def test_the_sample_invoice_runs_through(tmp_path: Path) -> None:
    """The README's sample: its reformatted PO reference is matched by the fallback."""
    sample = json.loads((ROOT / "examples" / "invoices" / "sample.json").read_text())
    clock = VirtualClock()
    world = InvoiceWorld(7, clock=clock)
    registry = fb.BreakerRegistry(clock=clock)
    try:
        async with fb.Engine(
            f"sqlite:///{tmp_path}/runs.db", clock=clock, registry=registry
        ) as engine:
            result = await engine.run(build_workflow(world), sample, run_id="sample")
    finally:
        await clock.aclose()
    assert result.status == fb.RunStatus.SUCCEEDED
    assert result["match_po"]["how"] == "normalised reference"
    assert result["post_entry"]["po"] == result["match_po"]["po"]


async def test_a_malformed_invoice_is_refused_before_any_agent_and_dead_lettered() -> None:
    """The invoice workflow's input schema: no OCR call for an invoice without its fields."""
    world = InvoiceWorld(7)
    calls: list[str] = []
    async with fb.Engine("memory://") as engine:
        with capture_events() as seen:
            result = await engine.run(build_workflow(world), {"id": 3}, run_id="bad")
        calls = [e.agent for e in seen if isinstance(e, StepAttempted)]
        dead = await engine.store.dlq_list()
        steps = await engine.store.get_steps("bad")
    assert result.status == fb.RunStatus.FAILED
    assert result.error is not None
    assert result.error["type"] == "firebreak.errors.InvalidInput"
    assert "invoice field 'id' has the wrong type" in result.error["message"]
    assert calls == []
    assert steps == {}
    assert [d.run_id for d in dead] == ["bad"]
    assert "invoice field 'id'" in dead[0].reason
