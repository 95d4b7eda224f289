"""Faults: declared in code or files, seeded per attempt, injected into a workflow copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import firebreak as fb
from firebreak._cli.chaos import register
from firebreak.chaos import (
    ChaosPermanent,
    Fault,
    Injector,
    ScenarioReport,
    ServiceDown,
    inject,
    load_faults,
    write_chart,
)
from firebreak.errors import ConfigError
from firebreak.store import MemoryStore, RunStatus
from firebreak.testing import FakeClock


def workflow() -> fb.Workflow:
    wf = fb.Workflow("w", deadline=100)

    @wf.agent(timeout=10, breaker="svc")
    async def fetch(ctx: fb.Context, x: int) -> dict:
        return {"x": x, "y": 2}

    @wf.agent(after=[fetch], timeout=10, critical=False, default=None)
    async def enrich(ctx: fb.Context, fetch: dict) -> dict:
        return fetch

    return wf


def test_faults_load_from_yaml_and_toml_and_reject_bad_entries(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text(
        "faults:\n  - kind: latency\n    agent: fetch\n    delay: 3\n"
        "  - kind: outage\n    service: svc\n    duration: 60\n"
    )
    (tmp_path / "f.toml").write_text(
        '[[faults]]\nkind = "error"\nagent = "enrich"\nerror = "permanent"\n'
    )
    yaml_faults = load_faults(tmp_path / "f.yaml")
    assert [f.kind for f in yaml_faults] == ["latency", "outage"]
    assert yaml_faults[1].targets("fetch", "svc")
    assert not yaml_faults[1].active(61)
    assert load_faults(tmp_path / "f.toml")[0].error == "permanent"
    with pytest.raises(ConfigError):
        Fault(kind="latency")  # neither agent nor service
    with pytest.raises(ConfigError, match="unknown"):
        load_faults([{"kind": "latency", "agent": "a", "colour": "red"}])
    with pytest.raises(ConfigError):
        Fault(kind="meteor", agent="a")  # type: ignore[arg-type]


async def test_injected_faults_act_on_the_copy_only() -> None:
    clock = FakeClock()
    original = workflow()
    injector = Injector(
        (
            Fault(kind="error", agent="enrich", error="permanent"),
            Fault(kind="latency", service="svc", delay=5),
        ),
        seed=1,
        clock=clock,
    )
    chaotic = inject(original, injector)
    async with MemoryStore(clock=clock.wall) as store:
        engine = fb.Engine(store, clock=clock, registry=fb.BreakerRegistry(clock=clock))
        result = await engine.run(chaotic, 1, run_id="a")
        plain = await engine.run(original, 1, run_id="b")
    assert result.status == RunStatus.DEGRADED
    assert "ChaosPermanent" in result.missing["enrich"]
    assert plain.status == RunStatus.SUCCEEDED
    assert clock.now() == pytest.approx(5)
    assert sum(injector.injected.values()) == 2
    assert issubclass(ChaosPermanent, fb.Permanent)
    assert issubclass(ServiceDown, fb.Transient)


async def test_corrupt_outputs_and_probabilities_are_seeded_per_attempt() -> None:
    clock = FakeClock()
    faults = (Fault(kind="corrupt", agent="fetch", probability=0.5),)
    outputs = []
    for _ in range(2):
        injector = Injector(faults, seed=9, clock=clock)
        chaotic = inject(workflow(), injector)
        async with MemoryStore(clock=clock.wall) as store:
            engine = fb.Engine(store, clock=clock, registry=fb.BreakerRegistry(clock=clock))
            outputs.append(
                [(await engine.run(chaotic, i, run_id=f"r{i}"))["fetch"] for i in range(20)]
            )
    assert outputs[0] == outputs[1]  # same seed: same faults, same corruption
    corrupted = sum(out != {"x": i, "y": 2} for i, out in enumerate(outputs[0]))
    assert 3 < corrupted < 17


def test_the_chart_is_a_png(tmp_path: Path) -> None:
    report = ScenarioReport(scenario="s", workflow="w", runs=3, succeeded=3)
    report.figures.update({"p50_normal": 1.0, "p99_normal": 2.0})
    report.require("ok", True, "fine")
    write_chart(report, tmp_path / "c.png")
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_runs_every_scenario_and_writes_json_and_charts(tmp_path: Path) -> None:
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None: ...

    result = CliRunner().invoke(
        app,
        [
            "chaos",
            "run",
            "firebreak.chaos:invoices",
            "-s",
            "all",
            "--n",
            "40",
            "--json",
            "--output",
            str(tmp_path / "r.json"),
            "--chart",
            str(tmp_path / "c.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["scenario"] for d in data] == [
        "agent-timeout",
        "agent-outage",
        "saturation",
        "corrupted-data",
    ]
    assert all(d["passed"] and d["lost"] == 0 and d["duplicated"] == 0 for d in data)
    assert (tmp_path / "r.saturation.json").exists()
    assert (tmp_path / "c.agent-outage.png").exists()
    bad = CliRunner().invoke(app, ["chaos", "run", "firebreak.chaos:invoices", "-s", "meteor"])
    assert bad.exit_code == 2
    failing = CliRunner().invoke(
        app,
        [
            "chaos",
            "run",
            "firebreak.chaos:invoices",
            "-s",
            "agent-outage",
            "--n",
            "5",
            "--set",
            "archive.on_exhausted=fail",
        ],
    )
    assert failing.exit_code == 1
    assert "FAIL" in failing.stdout


def test_cli_lists_the_scenarios_for_people_and_as_json() -> None:
    app = typer.Typer()
    register(app)

    @app.callback()
    def root() -> None: ...

    listed = json.loads(CliRunner().invoke(app, ["chaos", "list", "--json"]).stdout)
    by_name = {s["name"]: s for s in listed}
    assert by_name["worker-kill"]["processes"] is True
    assert by_name["agent-timeout"]["processes"] is False
    assert by_name["agent-timeout"]["summary"]
    text = CliRunner().invoke(app, ["chaos", "list"]).stdout
    assert "worker-kill (real processes): " in text
