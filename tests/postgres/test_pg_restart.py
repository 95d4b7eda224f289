"""The server restarts mid-batch: runs fail cleanly with a clear error, then resume to the end.

A throwaway cluster (initdb/pg_ctl in a temp dir, on a free port) is crashed with
``pg_ctl stop -m immediate`` while runs are in flight, so the shared server is untouched.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import firebreak as fb
from firebreak.errors import StoreError
from firebreak.store import RunStatus, StepStatus
from firebreak.store.postgres import PostgresStore

pytestmark = pytest.mark.slow


def _as_postgres(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A PostgreSQL cluster of this test's own."""

    base: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, *args: str) -> None:
        subprocess.run(  # noqa: S603  -- fixed arguments
            _as_postgres(["pg_ctl", "-D", str(self.base / "data"), *args]),
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1"
        self._ctl("-l", str(self.base / "log"), "-o", options, "-w", "start")

    def crash(self) -> None:
        self._ctl("-m", "immediate", "-w", "stop")


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        reason = "initdb/pg_ctl not on PATH"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    base = Path(tempfile.mkdtemp(prefix="firebreak-pg-"))
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    cluster = Cluster(base, _free_port())
    try:
        subprocess.run(  # noqa: S603  -- fixed arguments
            _as_postgres(
                ["initdb", "-D", str(base / "data"), "-U", "postgres", "--auth=trust", "-N"]
            ),
            check=True,
            capture_output=True,
            timeout=60,
        )
        cluster.start()
        yield cluster
    finally:
        subprocess.run(  # noqa: S603  -- best effort; it may be down already
            _as_postgres(["pg_ctl", "-D", str(base / "data"), "-m", "immediate", "stop"]),
            capture_output=True,
            check=False,
            timeout=60,
        )
        shutil.rmtree(base, ignore_errors=True)


RUNS = 12


def workflow(calls: Counter[str], gate: asyncio.Event, in_b: asyncio.Event) -> fb.Workflow:
    wf = fb.Workflow("restart", deadline=120)

    @wf.agent(timeout=60)
    async def a(ctx: fb.Context, n: int) -> int:
        calls["a"] += 1
        return n

    @wf.agent(after=[a], timeout=60)
    async def b(ctx: fb.Context, a: int) -> int:
        calls["b"] += 1
        if calls["b"] >= RUNS:
            in_b.set()
        await gate.wait()  # held until the server is down
        return a + 1

    @wf.agent(after=[b], timeout=60)
    async def c(ctx: fb.Context, b: int) -> int:
        calls["c"] += 1
        return b * 2

    return wf


async def test_a_crash_restart_mid_batch_loses_nothing(cluster: Cluster) -> None:
    calls: Counter[str] = Counter()
    gate, in_b = asyncio.Event(), asyncio.Event()
    wf = workflow(calls, gate, in_b)
    store = PostgresStore(cluster.url, schema="fb_restart", timeout=2)
    async with store:
        engine = fb.Engine(store, owner="orch-1")
        ids = [f"run-{i}" for i in range(RUNS)]
        inflight = [asyncio.create_task(engine.run(wf, i, run_id=r)) for i, r in enumerate(ids)]
        await asyncio.wait_for(in_b.wait(), 20)  # every run committed `a` and is inside `b`

        cluster.crash()
        gate.set()
        outcomes = await asyncio.gather(*inflight, return_exceptions=True)
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert len(errors) == RUNS, outcomes  # none can finish: `b` cannot be committed
        for err in errors:
            assert isinstance(err, StoreError), repr(err)
            text = str(err)
            assert text.startswith(f"postgres 127.0.0.1:{cluster.port}/postgres: "), text
            assert "\n" not in text

        cluster.start()
        results = {}
        deadline = time.monotonic() + 30
        for run_id in ids:
            while True:  # the pool reconnects in the background; a call may come first
                try:
                    results[run_id] = await engine.run(wf, run_id=run_id)
                    break
                except StoreError:
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)

        assert {r.status for r in results.values()} == {RunStatus.SUCCEEDED}
        assert [results[r]["c"] for r in ids] == [(i + 1) * 2 for i in range(RUNS)]
        for run_id in ids:
            steps = await store.get_steps(run_id)
            assert [(s.agent, s.seq) for s in steps.values()] == [("a", 1), ("b", 2), ("c", 3)]
            assert {s.status for s in steps.values()} == {StepStatus.SUCCEEDED}
            committed = [
                e["what"]["agent"]
                for e in await store.audit_log(run_id)
                if e["kind"] == "step_committed"
            ]
            assert sorted(committed) == ["a", "b", "c"]  # each step committed exactly once
        # `a` ran once per run (committed before the crash); `b` again after it.
        assert (calls["a"], calls["b"], calls["c"]) == (RUNS, 2 * RUNS, RUNS)
        await store.destroy()
