"""End to end: ``python -m firebreak`` in a real process, workflows found from the cwd."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
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


@pytest.mark.parametrize("as_json", [False, True])
def test_a_reader_that_went_away_is_exit_141_not_failed(tmp_path: Path, as_json: bool) -> None:
    """``firebreak run ... | head -1``: exit 1 would say the run failed; it succeeded."""
    (tmp_path / "in.json").write_text('{"n": 4}', encoding="utf-8")
    read, write = os.pipe()
    os.close(read)  # before the process writes a byte: every write to stdout is EPIPE
    try:
        ran = subprocess.run(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "firebreak", "run", "cli_workflows:ok",
             "-i", str(tmp_path / "in.json"), "--store", f"sqlite:///{tmp_path}/x.db",
             *(["--json"] if as_json else [])],
            cwd=HERE, stdout=write, stderr=subprocess.PIPE, text=True, timeout=30, check=False,
        )  # fmt: skip
    finally:
        os.close(write)
    assert ran.returncode == 141, ran.stderr
    assert "Traceback" not in ran.stderr


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


@pytest.mark.parametrize(
    ("signum", "code", "word"),
    [(signal.SIGTERM, 143, "terminated"), (signal.SIGINT, 130, "interrupted")],
)
def test_a_stopped_run_gives_its_lease_up_and_says_how_to_continue(
    tmp_path: Path, signum: signal.Signals, code: int, word: str
) -> None:
    """SIGTERM (a container stopping) as Ctrl-C: the run stops with its committed steps,
    frees its lease at once (no lease's wait before another process resumes it), and the
    process says how to continue it."""
    db = tmp_path / "x.db"
    (tmp_path / "in.json").write_text('{"n": 4}', encoding="utf-8")
    proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
        [sys.executable, "-m", "firebreak", "run", "cli_workflows:slow", "-i",
         str(tmp_path / "in.json"), "--run-id", "stopped", "--store", f"sqlite:///{db}"],
        cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "FIREBREAK_TEST_SLOW_SECOND": "1"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while not _committed(db, "stopped", "first"):  # then `second` is sleeping
            assert time.monotonic() < deadline, "the first step never committed"
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err
    assert f"{word}: the runs in progress keep every committed step" in err
    assert "firebreak resume stopped -w cli_workflows:slow" in err
    assert "Traceback" not in err
    with sqlite3.connect(db) as conn:
        status, owner = conn.execute(
            "SELECT status, lease_owner FROM runs WHERE run_id = 'stopped'"
        ).fetchone()
    assert (status, owner) == ("running", None)  # free to resume now

    resumed = firebreak(
        "resume", "stopped", "-w", "cli_workflows:slow", "--store", f"sqlite:///{db}", "--json"
    )
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["executed"] == ["second"]


def _committed(db: Path, run_id: str, agent: str) -> bool:
    if not db.exists():
        return False
    try:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT 1 FROM steps WHERE run_id = ? AND agent = ?", (run_id, agent)
            ).fetchone()
    except sqlite3.OperationalError:  # the schema is being created
        return False
    return row is not None
