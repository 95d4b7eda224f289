"""Process kills: SIGKILL a real orchestrator (or worker) process mid-batch and resume.

The orchestrator-kill scenario runs the invoice example in child processes on a SQLite
file, kills the orchestrator at seeded moments and restarts it on the same run ids; the
worker-kill scenario needs a Redis bus (``$FIREBREAK_TEST_REDIS_URL``, default
``redis://127.0.0.1:6379/15``): unreachable, it skips, or fails under ``CI=true``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from firebreak._cli.chaos import register
from firebreak.chaos import ChaosOptions, Fault, Kill, ScenarioReport, invoices, run_scenario
from firebreak.chaos.child import connect_ledger
from firebreak.chaos.processes import _Batch, _tally
from firebreak.chaos.report import Criterion
from firebreak.errors import ConfigError
from servers import require_server

REDIS_URL = os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def assert_sound(report: ScenarioReport, n: int, kills: int) -> None:
    failed = [f"{c.name}: {c.detail}" for c in report.criteria if not c.passed]
    assert report.passed, (failed, report.notes)
    assert report.runs == n
    assert report.succeeded == n  # the clean invoice world: every run goes through
    assert report.lost == 0
    assert report.duplicated == 0
    assert report.figures["kills"] == report.figures["kills_mid_batch"] == kills
    assert report.figures["effects_applied"] == n * 5  # one effect per step, by its key
    assert report.figures["effects_missing"] == 0
    assert report.figures["max_resume"] > 0


def test_kill_faults_are_declared_in_code_or_files_and_checked(tmp_path: Path) -> None:
    (tmp_path / "k.yaml").write_text(
        "faults:\n  - kind: kill\n    target: orchestrator\n    times: 2\n"
    )
    (tmp_path / "k.toml").write_text('[[faults]]\nkind = "kill"\ntarget = "worker"\nafter = 0.5\n')
    from firebreak.chaos import load_faults  # noqa: PLC0415

    assert load_faults(tmp_path / "k.yaml") == [Kill("orchestrator", times=2)]
    worker = load_faults(tmp_path / "k.toml")[0]
    assert (worker.target, worker.after, worker.times) == ("worker", 0.5, 1)
    assert not worker.targets("extract", "ocr-api")  # a kill hits processes, no agent
    assert Kill("worker", after=1).label == "SIGKILL worker x1 1s in"
    for bad in (
        {"kind": "kill"},  # no target
        {"kind": "kill", "target": "database"},
        {"kind": "kill", "target": "worker", "agent": "extract"},
        {"kind": "kill", "target": "worker", "times": 0},
        {"kind": "kill", "target": "worker", "after": -1},
        {"kind": "latency", "agent": "extract", "target": "worker"},
    ):
        with pytest.raises(ConfigError):
            Fault.from_dict(bad)


async def test_the_audit_counts_a_step_run_after_its_commit_and_a_missing_run(
    tmp_path: Path,
) -> None:
    """The oracle is not vacuous: ledger rows of a step run again are duplicates."""
    ledger = tmp_path / "ledger.db"
    conn = connect_ledger(ledger)
    conn.execute(
        "INSERT INTO calls (run_id, agent, key, pid, started_at, seen_committed)"
        " VALUES ('r1', 'extract', 'r1/extract', 1, 1.0, 1)"
    )
    for key, pid in (("r1/extract", 1), ("r1/extract#2", 2)):  # one step, two keys
        conn.execute(
            "INSERT INTO effects (key, run_id, agent, pid, applied_at)"
            " VALUES (?, 'r1', 'extract', ?, 1.0)",
            (key, pid),
        )
    conn.close()
    batch = _Batch(store=f"sqlite:///{tmp_path / 'store.db'}", ledger=ledger, run_ids=["r1"])
    report = ScenarioReport(scenario="orchestrator-kill", workflow="invoice")
    await _tally(report, batch, "invoice")
    assert report.lost == 1  # no record of r1 in the store
    assert report.duplicated == 2  # ran after its commit + its effect under a second key


@pytest.mark.slow
async def test_orchestrator_kill_on_invoices_resumes_every_run_exactly_once() -> None:
    report = await run_scenario("orchestrator-kill", invoices(), ChaosOptions(n=6, kills=3))
    assert_sound(report, 6, 3)
    assert report.time == "real"
    assert report.faults == ["SIGKILL orchestrator x3 at seeded moments mid-batch"]
    assert report.figures["steps_rerun"] >= 1  # kills landed with steps in flight
    assert report.figures["wall_s"] < 20


async def test_worker_kill_without_a_redis_bus_is_skipped_saying_why() -> None:
    report = await run_scenario("worker-kill", invoices(), ChaosOptions(n=2, bus="inproc://"))
    assert report.skipped is not None
    assert "redis://" in report.skipped
    assert "inproc://" in report.skipped
    assert not report.passed
    assert report.criteria == list[Criterion]()


@pytest.mark.slow
async def test_worker_kill_on_redis_redelivers_the_killed_workers_steps_once() -> None:
    require_server("redis", REDIS_URL)
    report = await run_scenario(
        "worker-kill", invoices(), ChaosOptions(n=6, kills=2, workers=2, bus=REDIS_URL)
    )
    assert_sound(report, 6, 2)
    assert report.figures["steps_rerun"] >= 2  # each victim died holding a step
    assert report.figures["p50_resume"] >= 0.5  # the bus's visibility timeout (1 s)


@pytest.mark.slow
def test_cli_runs_the_kill_scenarios_with_a_kill_fault_file(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None: ...

    (tmp_path / "kills.toml").write_text(
        '[[faults]]\nkind = "kill"\ntarget = "orchestrator"\ntimes = 2\n'
    )
    result = CliRunner().invoke(
        app,
        [
            "chaos",
            "run",
            "firebreak.chaos:invoices",
            "-s",
            "orchestrator-kill",
            "-s",
            "worker-kill",
            "--n",
            "4",
            "--faults",
            str(tmp_path / "kills.toml"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output  # a skipped scenario does not fail the run
    killed, skipped = json.loads(result.stdout)
    assert killed["passed"]
    assert killed["figures"]["kills"] == 2
    assert (killed["lost"], killed["duplicated"]) == (0, 0)
    assert skipped["scenario"] == "worker-kill"
    assert "redis://" in skipped["skipped"]
    plain = CliRunner().invoke(
        app, ["chaos", "run", "firebreak.chaos:invoices", "-s", "worker-kill", "--n", "2"]
    )
    assert plain.exit_code == 0
    assert "SKIPPED" in plain.stdout
    bad = CliRunner().invoke(
        app,
        ["chaos", "run", "firebreak.chaos:invoices", "-s", "all", "--store", "sqlite:///x.db"],
    )
    assert bad.exit_code == 2
