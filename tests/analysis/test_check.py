"""Each production rule flags what it should, names the agent, and stays quiet otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from examples.invoices.workflow import invoice_workflow
from typer.testing import CliRunner

import firebreak as fb
from firebreak._cli.check import register
from firebreak.analysis import (
    DeploymentConfig,
    calls_service,
    check,
    error_types,
    kebab,
    load_config,
    moves_money,
)
from firebreak.errors import ConfigError

GOOD = DeploymentConfig(store="postgresql://db/x", metrics="prometheus", dlq="store")

ROOT = Path(__file__).resolve().parents[2]


def clean_workflow() -> fb.Workflow:
    wf = fb.Workflow("clean", deadline=30)

    @wf.agent(timeout=5, breaker="ocr-api", retry=fb.Retry(attempts=3))
    async def extract(ctx: fb.Context, doc: dict) -> dict:
        return doc

    @wf.agent(after=[extract], timeout=5, critical=False, default=None)
    async def enrich(ctx: fb.Context, extract: dict) -> dict:
        return extract

    return wf


def codes(wf: fb.Workflow, config: DeploymentConfig = GOOD, **kw: object) -> set[str]:
    return check(wf, config, ignore=["FB010"], **kw).codes()  # type: ignore[arg-type]


def test_a_clean_workflow_well_deployed_passes() -> None:
    report = check(clean_workflow(), GOOD, ignore=["FB010"])
    assert report.ok
    assert not report.findings


def test_fb001_declared_external_agent_without_breaker_is_an_error() -> None:
    wf = fb.Workflow("w", deadline=30)

    @wf.agent(timeout=5)
    @calls_service("tax-api")
    async def tax(ctx: fb.Context, x: int) -> int:
        return x

    report = check(wf, GOOD, select=["FB001"])
    [finding] = report.errors
    assert finding.agent == "tax"
    assert "tax-api" in finding.message
    assert "breaker=" in finding.fix
    cfg = DeploymentConfig(
        store="sqlite:///x", metrics="p", dlq="store", external=frozenset({"tax"})
    )
    wf2 = fb.Workflow("w2", deadline=30)

    @wf2.agent(timeout=5)
    async def tax2(ctx: fb.Context, x: int) -> int:
        return x

    assert check(wf2, cfg, select=["FB001"]).ok
    cfg = DeploymentConfig(
        store="sqlite:///x", metrics="p", dlq="store", external=frozenset({"tax2"})
    )
    assert not check(wf2, cfg, select=["FB001"]).ok


def test_fb002_an_agent_that_retries_or_mentions_an_api_is_a_warning_unless_local() -> None:
    wf = fb.Workflow("w", deadline=30)

    @wf.agent(timeout=5, retry=fb.Retry(attempts=3))
    async def validate(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[validate], timeout=5)
    async def summarise(ctx: fb.Context, validate: int) -> int:
        """Ask the LLM for a summary."""
        return validate

    report = check(wf, GOOD, select=["FB002"])
    assert report.ok
    assert {f.agent for f in report.warnings} == {"validate", "summarise"}
    local = DeploymentConfig(
        store="sqlite:///x", metrics="p", dlq="store", local=frozenset({"validate", "summarise"})
    )
    assert not check(wf, local, select=["FB002"]).findings


def test_fb003_a_step_without_a_finite_timeout_is_an_error() -> None:
    wf = clean_workflow()
    object.__setattr__(wf.agents["extract"], "timeout", float("inf"))  # bypassing validation
    report = check(wf, GOOD, select=["FB003"])
    assert [f.agent for f in report.errors] == ["extract"]


def test_fb004_no_deadline_or_a_timeout_past_it_is_a_warning() -> None:
    wf = fb.Workflow("w")

    @wf.agent(timeout=5)
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    assert codes(wf, select=["FB004"]) == {"FB004"}
    wf2 = fb.Workflow("w2", deadline=10)

    @wf2.agent(timeout=60)
    async def b(ctx: fb.Context, x: int) -> int:
        return x

    [finding] = check(wf2, GOOD, select=["FB004"]).warnings
    assert finding.agent == "b"


def test_fb005_more_than_ten_attempts_is_unbounded_in_practice() -> None:
    wf = fb.Workflow("w", deadline=30)

    @wf.agent(timeout=1, breaker="s", retry=fb.Retry(attempts=50))
    async def storm(ctx: fb.Context, x: int) -> int:
        return x

    [finding] = check(wf, GOOD, select=["FB005"]).errors
    assert finding.agent == "storm"
    assert "50" in finding.message


def test_fb006_long_runs_on_a_memory_store_are_an_error_and_on_redis_a_warning() -> None:
    wf = fb.Workflow("w", deadline=3600)

    @wf.agent(timeout=5)
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    memory = DeploymentConfig(store="memory://", metrics="p", dlq="elsewhere://q")
    assert [f.code for f in check(wf, memory, select=["FB006"]).errors] == ["FB006"]
    redis = DeploymentConfig(store="redis://r", metrics="p", dlq="store")
    assert [f.code for f in check(wf, redis, select=["FB006"]).warnings] == ["FB006"]
    assert check(clean_workflow(), memory, select=["FB006"]).ok  # a 30 s workflow is short


def test_fb006_runs_that_pause_are_long_whatever_their_deadline() -> None:
    wf = fb.Workflow("w", deadline=10)

    @wf.agent(timeout=5, breaker="s", on_exhausted="pause")
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    memory = DeploymentConfig(store="memory://", metrics="p", dlq="x://")
    assert "pause" in check(wf, memory, select=["FB006"]).errors[0].message
    assert not check(wf, memory, select=["FB006"]).ok


def test_fb007_fb008_fb009_deployment_gaps() -> None:
    report = check(clean_workflow(), DeploymentConfig(), ignore=["FB010"])
    assert report.codes() == {"FB007", "FB008", "FB009"}
    assert {f.code for f in report.errors} == {"FB008", "FB009"}
    memory_dlq = DeploymentConfig(store="memory://", metrics="p", dlq="store")
    assert codes(clean_workflow(), memory_dlq) == {"FB008"}


def test_fb010_error_types_need_runbooks_by_kebab_case_file_name(tmp_path: Path) -> None:
    assert kebab("CircuitOpenError") == "circuit-open-error"
    assert kebab("HTTPError") == "http-error"
    wf = clean_workflow()
    types = error_types(wf, GOOD)
    assert {"StepTimeout", "DeadlineExceeded", "CircuitOpenError"} <= set(types)
    config = DeploymentConfig(
        store="sqlite:///x", metrics="p", dlq="store", runbooks=tmp_path, errors=("LedgerLocked",)
    )
    missing = {
        f.message.split(" can stop with ")[1].split(",")[0]
        for f in check(wf, config, select=["FB010"]).findings
    }
    assert missing == {*types, "LedgerLocked"}
    for name in types:
        (tmp_path / f"{kebab(name)}.md").write_text("# runbook\n")
    (tmp_path / "ledger-locked.md").write_text("# runbook\n")
    assert not check(wf, config, select=["FB010"]).findings


def test_fb011_an_optional_default_that_invents_data_is_an_error() -> None:
    wf = fb.Workflow("w", deadline=30)

    @wf.agent(timeout=5)
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[a], timeout=5, critical=False, default={"score": 0.5})
    async def score(ctx: fb.Context, a: int) -> dict:
        return {"score": 1.0}

    @wf.agent(after=[a], timeout=5, critical=False, default=[])
    async def tags(ctx: fb.Context, a: int) -> list:
        return []

    [finding] = check(wf, GOOD, select=["FB011"]).errors
    assert finding.agent == "score"
    assert "0.5" in finding.message


def test_fb012_payment_like_critical_steps_retry_at_most_twice() -> None:
    wf = fb.Workflow("w", deadline=30)

    @wf.agent(timeout=5, breaker="psp", retry=fb.Retry(attempts=3))
    async def charge_card(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[charge_card], timeout=5, breaker="bank", retry=fb.Retry(attempts=2))
    async def refund(ctx: fb.Context, charge_card: int) -> int:
        return charge_card

    @wf.agent(after=[refund], timeout=5, breaker="erp", retry=fb.Retry(attempts=4))
    @moves_money
    async def book(ctx: fb.Context, refund: int) -> int:
        return refund

    report = check(wf, GOOD, select=["FB012"])
    assert sorted(f.agent or "" for f in report.errors) == ["book", "charge_card"]


def test_the_invoice_example_fails_only_on_its_missing_deployment(tmp_path: Path) -> None:
    report = check(invoice_workflow, DeploymentConfig(), ignore=["FB010"])
    assert {f.code for f in report.errors} == {"FB008", "FB009"}
    assert not [f for f in report.findings if f.code == "FB002"]  # every service has a breaker


def test_the_invoice_example_passes_with_its_deployment_config() -> None:
    config = load_config(ROOT / "examples" / "invoices" / "firebreak.toml", env={})
    report = check(invoice_workflow, config)
    assert [f.code for f in report.findings] == []


def test_load_config_reads_toml_and_takes_the_store_from_option_file_then_env(
    tmp_path: Path,
) -> None:
    path = tmp_path / "firebreak.toml"
    path.write_text(
        '[store]\nurl = "postgresql://db/x"\n[metrics]\nexporter = "prometheus"\n'
        '[dlq]\ndestination = "store"\n[check]\nlocal = ["merge"]\nignore = ["FB004"]\n'
        'runbooks = "rb"\n'
    )
    config = load_config(cwd=tmp_path, env={})
    assert config.store == "postgresql://db/x"
    assert config.store_source == "config"
    assert config.metrics == "prometheus"
    assert config.dlq == "store"
    assert config.local == {"merge"}
    assert config.ignore == {"FB004"}
    assert config.runbooks == tmp_path / "rb"
    assert load_config(path, store="memory://", env={}).store_source == "option"
    env = load_config(
        cwd=tmp_path / "nowhere" if False else Path("/nonexistent"),
        env={"FIREBREAK_STORE": "sqlite:///a.db"},
    )
    assert env.store == "sqlite:///a.db"
    assert env.store_source == "env"
    bad = tmp_path / "bad.toml"
    bad.write_text("[check]\nlocal = 3\n")
    with pytest.raises(ConfigError, match="local"):
        load_config(bad, env={})


def test_cli_check_exits_1_on_errors_and_prints_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = typer.Typer()
    register(app)
    runner = CliRunner()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FIREBREAK_STORE", raising=False)
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2]))
    result = runner.invoke(app, ["check", "examples.invoices.workflow:invoice_workflow", "--json"])
    assert result.exit_code == 1, result.output
    data = json.loads(result.stdout)
    assert data["ok"] is False
    assert {"FB008", "FB009"} <= {f["code"] for f in data["findings"]}
    (tmp_path / "firebreak.toml").write_text(
        '[store]\nurl = "sqlite:///runs.db"\n[metrics]\nexporter = "prometheus"\n'
        '[dlq]\ndestination = "store"\n'
    )
    result = runner.invoke(app, ["check", "examples.invoices.workflow:invoice_workflow"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["check", "examples.invoices.workflow:invoice_workflow", "--strict"]
    )
    assert result.exit_code == 1
    result = runner.invoke(
        app, ["check", "examples.invoices.workflow:invoice_workflow", "--ignore", "FB999"]
    )
    assert result.exit_code == 2
