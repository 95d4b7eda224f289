"""The four standard scenarios on the invoice example, on virtual time, meet their criteria."""

from __future__ import annotations

import pytest

from firebreak.chaos import ChaosOptions, invoices, run_scenario
from firebreak.chaos.faults import Fault

N = 40


def assert_sound(report) -> None:  # type: ignore[no-untyped-def]
    failed = [f"{c.name}: {c.detail}" for c in report.criteria if not c.passed]
    assert report.passed, failed
    assert report.lost == 0
    assert report.duplicated == 0
    accounted = (
        report.succeeded + report.degraded + report.paused + report.failed + report.needs_review
    )
    assert accounted == report.runs


async def test_agent_timeout_opens_the_breaker_and_rejects_later_calls_at_once() -> None:
    report = await run_scenario("agent-timeout", invoices(), ChaosOptions(n=N))
    assert_sound(report)
    assert report.figures["breaker_trips"] >= 1
    assert report.figures["calls_rejected"] > 0
    assert report.figures["max_run"] <= 300  # none hangs: bounded by the run deadline
    # OCR's fallback (the enhanced engine) takes over: every invoice still goes through.
    assert report.succeeded == N


async def test_agent_outage_pauses_runs_and_resumes_every_one_to_completion() -> None:
    report = await run_scenario("agent-outage", invoices(), ChaosOptions(n=N))
    assert_sound(report)
    assert report.figures["peak_paused"] == N
    assert report.succeeded == N
    assert report.paused == 0
    assert report.figures["sim_s"] >= 300  # nobody finished before the service came back
    assert report.overrides == {"archive": {"on_exhausted": "pause"}}


async def test_saturation_sheds_with_overloaded_and_keeps_admitted_latency() -> None:
    report = await run_scenario("saturation", invoices(), ChaosOptions(n=20))
    assert_sound(report)
    assert report.shed > 0
    assert report.figures["rejected_metric"] >= report.shed
    assert report.figures["p99_admitted"] <= 1.5 * report.figures["p99_normal"] + 1
    assert any("max_in_flight" in note for note in report.notes)  # how to refuse earlier


async def test_saturation_without_bulkheads_fails_and_says_why() -> None:
    target = invoices()
    no_bulkheads = {name: {"bulkhead": None} for name in target.overrides["saturation"]}
    report = await run_scenario("saturation", target, ChaosOptions(n=20, overrides=no_bulkheads))
    assert not report.passed
    failed = {c.name for c in report.criteria if not c.passed}
    assert "agents have bulkheads" in failed
    assert "admitted runs keep their latency" in failed
    assert report.lost == 0


async def test_corrupted_inputs_are_dead_lettered_and_other_runs_are_unaffected() -> None:
    report = await run_scenario("corrupted-data", invoices(), ChaosOptions(n=N))
    assert_sound(report)
    assert report.figures["corrupted"] == report.figures["rejected_by_validation"] > 0
    assert report.dead_lettered == report.failed == report.figures["corrupted"]
    assert not any("declares no input schema" in note for note in report.notes)  # its own


async def test_an_outage_on_an_agent_that_does_not_pause_fails_the_scenario() -> None:
    target = invoices()
    report = await run_scenario(
        "agent-outage",
        target,
        ChaosOptions(n=10, overrides={"archive": {"on_exhausted": "fail"}}),
    )
    assert not report.passed
    assert report.failed == 10 == report.dead_lettered
    assert report.lost == 0
    assert report.duplicated == 0
    assert any("on_exhausted='pause'" in note for note in report.notes)
    # and why the runs failed: the report used to give the counts only
    assert "of 10): agent 'archive' failed: chaos: archive is down" in report.notes[-1]


@pytest.mark.parametrize("scenario", ["agent-timeout", "agent-outage"])
async def test_scenarios_are_reproducible_for_a_seed(scenario: str) -> None:
    """Breakers' open-time jitter included (it moves pause times: agent-outage's `sim_s`
    differed from one run to the next with the same seed)."""
    first = await run_scenario(scenario, invoices(), ChaosOptions(n=30, seed=3))
    again = await run_scenario(scenario, invoices(), ChaosOptions(n=30, seed=3))
    strip = {"wall_s"}
    assert {k: v for k, v in first.figures.items() if k not in strip} == {
        k: v for k, v in again.figures.items() if k not in strip
    }
    assert [(c.name, c.passed, c.detail) for c in first.criteria] == [
        (c.name, c.passed, c.detail) for c in again.criteria
    ]


async def test_agent_timeout_on_an_agent_without_a_breaker_fails_the_scenario() -> None:
    """Another agent's breaker tripping (downstream of the delay) must not pass it."""
    ocr_down = Fault(kind="error", agent="extract", fallbacks=True)  # ocr-api trips, upstream
    report = await run_scenario(
        "agent-timeout",
        invoices(),
        ChaosOptions(
            n=40,
            agent="validate",
            overrides={"validate": {"breaker": None}},
            faults=(ocr_down,),
        ),
    )
    assert not report.passed
    failed = {c.name for c in report.criteria if not c.passed}
    assert "breaker of validate opens" in failed
    assert report.figures["breaker_trips"] == 0


async def test_an_unknown_scenario_is_a_key_error() -> None:
    with pytest.raises(KeyError, match="known"):
        await run_scenario("meteor", invoices())
