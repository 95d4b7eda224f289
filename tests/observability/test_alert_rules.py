"""deploy/prometheus/alerts.yml: valid, unit-tested with promtool, on the metrics we export."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from shipped import ALERTS, ALERTS_TEST, ROOT, exported_series_names, names_in


def promtool() -> str:
    """The promtool binary; under CI a missing one fails the test instead of skipping it."""
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("promtool is required in CI: apt-get install prometheus")
        pytest.skip("promtool not installed (Debian: apt-get install prometheus)")
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run(  # noqa: S603 - our own fixed arguments
        [promtool(), *args],
        cwd=ALERTS.parent,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict[str, Any]]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def test_promtool_checks_the_rules() -> None:
    assert "SUCCESS" in run_promtool("check", "rules", ALERTS.name)


def test_promtool_unit_tests_of_the_rules_pass() -> None:
    assert "SUCCESS" in run_promtool("test", "rules", ALERTS_TEST.name)


def test_the_default_thresholds_are_alerted_on() -> None:
    expressions = {name: " ".join(rule["expr"].split()) for name, rule in alerts().items()}
    assert expressions == {
        "FirebreakAgentErrorRateHigh": "firebreak:step_attempts:error_ratio_5m > 0.05 and on "
        "(workflow, agent) firebreak:step_attempts:rate_5m * 300 >= 10",
        "FirebreakStepLatencyHigh": "firebreak:step_duration_seconds:p99_5m > 2 * "
        "firebreak:step_duration_seconds:p99_normal",
        "FirebreakCircuitsOpen": "count(max by (breaker) (firebreak_circuit_state) == 2) > 1",
        "FirebreakDeadLetterBacklog": "max by (workflow) (firebreak_dlq_size) > 100",
        "FirebreakRetryStorm": "firebreak:retries:per_minute > 50",
    }
    assert alerts()["FirebreakAgentErrorRateHigh"]["for"] == "5m"


def test_every_alert_has_a_summary_and_an_existing_runbook() -> None:
    for name, rule in alerts().items():
        annotations = rule["annotations"]
        assert annotations["summary"], name
        assert annotations["description"], name
        assert rule["labels"]["severity"] in ("warning", "critical"), name
        runbook = ROOT / annotations["runbook_url"]
        assert runbook.is_file(), f"{name}: {runbook}"
        text = runbook.read_text()
        for section in ("## What it means", "## How to check", "## How to recover", "## Commands"):
            assert section in text, f"{runbook.name} lacks {section!r}"
        assert "firebreak " in text


def test_every_runbook_is_for_an_alert_or_an_error_type() -> None:
    """A page is linked from an alert, or documents an error of `firebreak.errors`."""
    from firebreak import errors  # noqa: PLC0415

    linked = {ROOT / rule["annotations"]["runbook_url"] for rule in alerts().values()}
    pages = set((ROOT / "docs" / "runbooks").glob("*.md")) - {ROOT / "docs/runbooks/README.md"}
    for page in pages - linked:
        text = page.read_text()
        name = text.removeprefix("# ").split(" ", 1)[0]
        assert name in errors.__all__, f"{page.name}: neither an alert's nor an error type's"
        for section in ("## What it means", "## How to check", "## How to recover", "## Commands"):
            assert section in text, f"{page.name} lacks {section!r}"
        assert page.name in (ROOT / "docs/runbooks/README.md").read_text()
    assert linked <= pages


def test_rules_use_only_exported_metrics_and_recorded_names() -> None:
    exported = exported_series_names()
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    for rule in rules():
        used = names_in(rule["expr"])
        assert used, rule
        assert used <= exported | recorded, used - exported - recorded
