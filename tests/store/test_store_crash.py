"""A real crash: SIGKILL a process mid-commit; every acknowledged commit must survive."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from firebreak.store import SQLiteStore, StepStatus

HERE = Path(__file__).parent
SRC = HERE.parents[1] / "src"


def _acknowledged_until_kill(path: Path, lines_before_kill: int, runs: int) -> list[str]:
    paths = [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(  # noqa: S603  -- our own script, our own interpreter
        [sys.executable, str(HERE / "crash_writer.py"), str(path), str(runs)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == "ready\n"
        acked = [proc.stdout.readline().strip() for _ in range(lines_before_kill)]
        proc.send_signal(signal.SIGKILL)
        acked += [line.strip() for line in proc.stdout]  # printed before death: acked too
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    return [line for line in acked if line]


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_every_acknowledged_commit_survives_sigkill(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    path = tmp_path / "crash.db"
    acked = _acknowledged_until_kill(path, rng.randint(50, 1500), runs=rng.choice([1, 8, 50]))
    assert len(acked) >= 50

    conn = sqlite3.connect(path)  # the file is intact after recovery
    assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    conn.close()

    async with SQLiteStore(path) as store:
        committed = {}
        for run in await store.list_runs(workflow="crash", limit=1000):
            committed[run.run_id] = await store.get_steps(run.run_id)
        for line in acked:
            run_id, agent = line.split()
            step = committed[run_id][agent]
            assert step.status is StepStatus.SUCCEEDED
            assert step.output == [int(agent[1:])] * 20
        for steps in committed.values():  # no holes: a run's steps commit in order
            assert [s.agent for s in steps.values()] == [f"a{i}" for i in range(len(steps))]
