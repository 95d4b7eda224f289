"""End to end: ``python -m firebreak`` in a real process, workflows found from the cwd."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).parent
pytestmark = pytest.mark.slow


def firebreak(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "firebreak", *args],
        cwd=HERE,  # cli_workflows is importable only because the cwd is on sys.path
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **(env or {})},
        check=False,
    )


def test_run_then_show_in_real_processes(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/x.db"
    (tmp_path / "in.json").write_text('{"n": 4}', encoding="utf-8")
    ran = firebreak(
        "run", "cli_workflows:ok", "--input", str(tmp_path / "in.json"), "--run-id", "e2e",
        "--store", store, "--json",
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["outputs"]["report"] == "n=8"
    shown = firebreak("show", "e2e", "--store", store, "--json")
    assert shown.returncode == 0, shown.stderr
    assert [s["status"] for s in json.loads(shown.stdout)["steps"]] == ["succeeded"] * 2


def test_failed_run_exits_1_without_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "order.json").write_text('{"id": 1, "decline": true}', encoding="utf-8")
    ran = firebreak(
        "run", "cli_workflows:failing", "-i", str(tmp_path / "order.json"),
        "--store", f"sqlite:///{tmp_path}/x.db",
    )  # fmt: skip
    assert ran.returncode == 1
    assert "failed agent: charge" in ran.stdout
    missing = firebreak("run", "cli_workflows:ok", "-i", str(tmp_path / "nope.json"))
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "no such file" in missing.stderr
