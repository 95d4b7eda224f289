"""`analyze`: blast radius per agent and success with and without the patterns."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from examples.invoices.workflow import invoice_workflow
from typer.testing import CliRunner

from firebreak._cli.check import register
from firebreak.analysis import analyze, load_rates
from firebreak.errors import ConfigError


def test_blast_radius_and_estimates_of_the_invoice_example() -> None:
    a = analyze(invoice_workflow, 0.95)
    blast = {b.agent: b for b in a.blast}
    assert blast["extract"].fails_run
    assert "archive" in blast["extract"].skipped
    assert not blast["match_po"].fails_run
    assert blast["match_po"].degraded_inputs == ("post_entry",)
    bare, both = a.estimate("bare").reliability, a.estimate("both").reliability
    assert bare.success == pytest.approx(0.95**5)
    assert both.success > a.estimate("retries").reliability.success > bare.success
    assert a.estimate("degradation").reliability.success == pytest.approx(0.95**4)


def test_rates_per_agent_from_a_file_with_a_default(tmp_path: Path) -> None:
    path = tmp_path / "rates.toml"
    path.write_text("[rates]\ndefault = 0.99\nextract = 0.9\n")
    rates = load_rates(path)
    a = analyze(invoice_workflow, rates)
    assert a.rates["extract"] == 0.9
    assert a.rates["archive"] == 0.99
    (tmp_path / "bad.json").write_text(json.dumps({"nope": 0.5}))
    with pytest.raises(ConfigError, match="unknown agents"):
        analyze(invoice_workflow, load_rates(tmp_path / "bad.json"))


def test_cli_analyze_prints_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    app = typer.Typer()
    register(app)
    monkeypatch.syspath_prepend(str(Path(__file__).parents[2]))
    result = CliRunner().invoke(
        app, ["analyze", "examples.invoices.workflow:invoice_workflow", "--json", "--rate", "0.9"]
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [e["label"] for e in data["estimates"]] == ["bare", "retries", "degradation", "both"]
    assert len(data["blast_radius"]) == 5
    text = CliRunner().invoke(app, ["analyze", "examples.invoices.workflow:invoice_workflow"])
    assert text.exit_code == 0
    assert "blast radius" in text.stdout
