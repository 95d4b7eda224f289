"""Real crashes: SIGKILL an orchestrator process mid-run, many times, and resume.

`crash_worker.py` drives runs of a nine-agent workflow (a diamond, a chain, a long
concurrent branch) on SQLite; every agent applies a side effect keyed by
``ctx.idempotency_key`` to a separate ledger database and records each invocation. These
tests kill it with SIGKILL at seeded random moments, restart it on the same run ids (the
same code path: ``engine.run(wf, input, run_id=...)`` resumes an existing run), and check
that every run ends with every step committed exactly once, every side effect applied once,
and no step that was committed before a kill ever ran again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from crash_worker import AGENTS, DEPENDENCIES, expected_outputs, run_input

from firebreak.errors import StaleLease
from firebreak.store import Lease, RunStatus, SQLiteStore, StepStatus

HERE = Path(__file__).parent
WORKER = HERE / "crash_worker.py"
SRC = HERE.parents[1] / "src"
OWNER = "crash-orchestrator"  # stable across restarts: the new process re-enters its lease
TIMEOUT = 20.0  # seconds any one worker process may take; far above the ~0.1 s it needs


@dataclass(slots=True)
class Paths:
    store: Path
    ledger: Path


@dataclass(slots=True)
class Life:
    """What one worker process did before it ended (killed or done)."""

    pid: int
    killed: bool
    ready_at: float | None = None
    lines: list[str] = field(default_factory=list)


def _env(extra: dict[str, str] | None = None) -> dict[str, str]:
    paths = [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(extra or {})}


async def _live(
    paths: Paths,
    run_ids: list[str],
    *,
    seed: int,
    owner: str = OWNER,
    ttl: float = 30.0,
    kill_after: float | None = None,
    before_ready: bool = False,
    kill_when: str | None = None,
    env: dict[str, str] | None = None,
) -> Life:
    """Start a worker; SIGKILL it `kill_after` s after its "ready" line (or after its start,
    `before_ready`), or once run `kill_when` has two committed steps; else let it finish.
    """
    args = [str(paths.store), str(paths.ledger), owner, str(ttl), str(seed), *run_ids]
    # subprocess.Popen, not asyncio's: Popen.send_signal polls first, so a worker that has
    # already exited is never signalled, and no child watcher races it for the exit status.
    proc = subprocess.Popen(  # noqa: S603, ASYNC220 - our own script; see above
        [sys.executable, str(WORKER), *args], stdout=subprocess.PIPE, text=True, env=_env(env)
    )
    assert proc.stdout is not None
    life = Life(pid=proc.pid, killed=False)
    try:
        if kill_after is not None and before_ready:
            await asyncio.sleep(kill_after)
        elif kill_after is not None or kill_when is not None:
            first = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), TIMEOUT)
            assert first.startswith("ready "), first
            life.lines.append(first.strip())
            if kill_when is not None:
                await _until_committed(paths.store, kill_when, 2)
            else:
                await asyncio.sleep(kill_after or 0.0)
        if kill_after is not None or kill_when is not None:
            proc.send_signal(signal.SIGKILL)
        rest = await asyncio.wait_for(asyncio.to_thread(proc.stdout.read), TIMEOUT)
        await asyncio.wait_for(asyncio.to_thread(proc.wait), TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    life.lines += [line for line in rest.splitlines() if line]
    life.killed = proc.returncode == -signal.SIGKILL
    if not life.killed:
        assert proc.returncode == 0, f"worker failed ({proc.returncode}): {life.lines}"
    for line in life.lines:
        if line.startswith("ready "):
            life.ready_at = float(line.split()[2])
    return life


async def _until_committed(store: Path, run_id: str, count: int) -> None:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            with contextlib.suppress(sqlite3.OperationalError):  # tables not created yet
                query = "SELECT COUNT(*) FROM steps WHERE run_id = ?"
                if conn.execute(query, (run_id,)).fetchone()[0] >= count:
                    return
            await asyncio.sleep(0.001)
        raise AssertionError(f"run {run_id!r} never committed {count} steps")
    finally:
        conn.close()


async def _unfinished(paths: Paths, run_ids: list[str]) -> list[str]:
    if not paths.store.exists():
        return list(run_ids)
    async with SQLiteStore(paths.store) as store:
        records = {run_id: await store.get_run(run_id) for run_id in run_ids}
    return [
        run_id
        for run_id, rec in records.items()
        if rec is None or rec.status is not RunStatus.SUCCEEDED
    ]


def _ledger(paths: Paths, sql: str, *params: object) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(paths.ledger)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def _check_runs(paths: Paths, run_ids: list[str]) -> int:
    """Assert every invariant of every run; return how many in-flight steps ran again."""
    async with SQLiteStore(paths.store) as store:
        runs = {run_id: await store.get_run(run_id) for run_id in run_ids}
        steps = {run_id: await store.get_steps(run_id) for run_id in run_ids}
    reruns = 0
    for run_id in run_ids:
        record = runs[run_id]
        assert record is not None
        assert record.status is RunStatus.SUCCEEDED, (run_id, record.status, record.error)
        # Not checked: lease_owner. A kill between the commit of the final status and the
        # release of the lease leaves the lease on a finished run (a resume returns the stored
        # result without touching it); it only expires. Harmless, reported.
        expected = expected_outputs(run_input(run_id)["n"])
        assert record.result is not None
        assert record.result["outputs"] == expected

        # Every agent committed exactly once: one record each, seqs unique and gapless.
        committed = steps[run_id]
        assert set(committed) == set(AGENTS)
        assert sorted(s.seq for s in committed.values()) == list(range(1, len(AGENTS) + 1))
        for agent, step in committed.items():
            assert step.status is StepStatus.SUCCEEDED
            assert step.output == expected[agent]
            for dep in DEPENDENCIES[agent]:  # committed before any dependent could start
                assert committed[dep].seq < step.seq

        # Each side effect applied once, with the committed value, keyed by ctx.idempotency_key.
        effects = _ledger(
            paths, "SELECT key, value FROM effects WHERE key LIKE ? ESCAPE '!'", f"{run_id}/%"
        )
        assert sorted(effects) == sorted((f"{run_id}/{a}", expected[a]) for a in AGENTS)

        # No committed step ran again: no invocation saw its step committed when it started,
        # and none started after the commit (store clock and ledger clock are both wall time).
        calls = _ledger(
            paths,
            "SELECT agent, pid, started_at, seen_committed FROM calls WHERE run_id = ?",
            run_id,
        )
        assert {c[0] for c in calls} == set(AGENTS)
        for called, pid, started_at, seen in calls:
            step = committed[called]
            assert seen == 0, f"{run_id}/{called} ran again in pid {pid}: already committed"
            assert isinstance(started_at, float)
            assert step.completed_at is not None
            assert started_at <= step.completed_at, f"{run_id}/{called} ran after its commit"
            for dep in DEPENDENCIES[called]:
                dep_done = committed[dep].completed_at
                assert dep_done is not None
                assert dep_done <= started_at, f"{run_id}/{called} started before {dep} committed"
        per_process = [(c[0], c[1]) for c in calls]
        assert len(per_process) == len(set(per_process)), "a step ran twice in one process"
        reruns += len(calls) - len(AGENTS)
    return reruns


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 22, 33, 44, 55])
async def test_runs_survive_repeated_sigkill_with_every_step_committed_once(
    tmp_path: Path, seed: int
) -> None:
    """Five seeded SIGKILLs per seed (twenty-five in all), then a clean finish: exactly once."""
    rng = random.Random(seed)
    paths = Paths(tmp_path / "store.db", tmp_path / "ledger.db")
    run_ids: list[str] = []
    kills = interrupted = 0
    life_no = 0
    while kills < 5:
        unfinished = await _unfinished(paths, run_ids)
        if not unfinished:  # keep every kill meaningful: give the worker new runs to drive
            fresh = [f"s{seed}-r{len(run_ids) + i}" for i in range(3)]
            run_ids += fresh
            unfinished = fresh
        life_no += 1
        before_ready = rng.random() < 0.15  # sometimes die while opening / migrating the store
        delay = rng.uniform(0.0, 0.12) if before_ready else rng.uniform(0.0, 0.07)
        life = await _live(
            paths, run_ids, seed=seed * 100 + life_no, kill_after=delay, before_ready=before_ready
        )
        if life.killed:
            kills += 1
            interrupted += bool(await _unfinished(paths, unfinished))
    life = await _live(paths, run_ids, seed=seed * 100 + life_no + 1)  # resume to the end
    assert not life.killed
    assert sorted(line for line in life.lines if line.startswith("done ")) == sorted(
        f"done {run_id} succeeded" for run_id in run_ids
    )
    assert interrupted >= 2, f"only {interrupted} of {kills} kills landed mid-run"
    await _check_runs(paths, run_ids)

    conn = sqlite3.connect(paths.store)  # the file is intact after all those recoveries
    try:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    finally:
        conn.close()


@pytest.mark.slow
async def test_in_flight_steps_run_again_after_a_kill_and_apply_their_effect_once(
    tmp_path: Path,
) -> None:
    """A kill mid-step: the step runs again on resume with the same key; one effect."""
    paths = Paths(tmp_path / "store.db", tmp_path / "ledger.db")
    run_ids = ["inflight-0", "inflight-1", "inflight-2"]
    life = await _live(paths, run_ids, seed=1, kill_when="inflight-0")
    assert life.killed
    started = {
        (run_id, agent) for run_id, agent in _ledger(paths, "SELECT run_id, agent FROM calls")
    }
    async with SQLiteStore(paths.store) as store:
        done = {(r, a) for r in run_ids for a in await store.get_steps(r)}
    assert done < started or done == started  # nothing commits without having started
    await _live(paths, run_ids, seed=2)
    reruns = await _check_runs(paths, run_ids)
    # Whatever was started but not committed when the process died ran again; nothing else.
    assert reruns == len(started - done)


@pytest.mark.slow
async def test_another_owner_takes_a_killed_run_over_only_after_its_lease_expires(
    tmp_path: Path,
) -> None:
    """A killed orchestrator's lease blocks a new owner until it expires, then fences it."""
    paths = Paths(tmp_path / "store.db", tmp_path / "ledger.db")
    run_ids = ["takeover-0", "takeover-1", "takeover-2"]
    ttl = 0.5
    killed = await _live(
        paths, run_ids, seed=1, owner="orchestrator-a", ttl=ttl, kill_when=run_ids[0]
    )
    assert killed.killed
    async with SQLiteStore(paths.store) as store:
        left = {run_id: await store.get_run(run_id) for run_id in run_ids}
    unfinished = [
        r for r, rec in left.items() if rec is not None and rec.status is RunStatus.RUNNING
    ]
    assert run_ids[0] in unfinished
    old_leases: dict[str, Lease] = {}
    for run_id in unfinished:
        rec = left[run_id]
        assert rec is not None
        assert rec.lease_owner == "orchestrator-a"  # SIGKILL left the lease behind
        assert rec.lease_expires is not None
        old_leases[run_id] = Lease(
            run_id=run_id,
            owner="orchestrator-a",
            token=rec.lease_token,
            expires_at=rec.lease_expires,
        )

    taker = await _live(paths, run_ids, seed=2, owner="orchestrator-b", ttl=ttl)
    assert not taker.killed
    assert taker.ready_at is not None
    held = {line.split()[1] for line in taker.lines if line.startswith("lease-held ")}
    for run_id, lease in old_leases.items():
        if taker.ready_at < lease.expires_at - 0.05:  # still live when the taker came up
            assert run_id in held, f"{run_id}: taken over before its lease expired"
    # The new owner did not touch a run before the old lease on it had expired.
    for run_id, lease in old_leases.items():
        calls = _ledger(
            paths, "SELECT started_at FROM calls WHERE run_id = ? AND pid = ?", run_id, taker.pid
        )
        assert all(c[0] >= lease.expires_at for c in calls), run_id

    await _check_runs(paths, run_ids)
    async with SQLiteStore(paths.store) as store:
        for run_id, lease in old_leases.items():
            rec = await store.get_run(run_id)
            assert rec is not None
            assert rec.lease_token == lease.token + 1  # the takeover took a new fencing token
            with pytest.raises(StaleLease):  # the dead owner's token is refused from now on
                await store.set_run_status(lease, RunStatus.FAILED)


@pytest.mark.slow
async def test_the_checks_catch_a_resume_that_runs_committed_steps_again(tmp_path: Path) -> None:
    """The oracle is not vacuous: a worker that forgets its checkpoints fails the checks."""
    paths = Paths(tmp_path / "store.db", tmp_path / "ledger.db")
    run_ids = ["broken-0"]
    assert (await _live(paths, run_ids, seed=1, kill_when=run_ids[0])).killed
    await _live(paths, run_ids, seed=2, env={"CRASH_WORKER_FORGET_STEPS": "1"})
    with pytest.raises(AssertionError, match="ran again"):
        await _check_runs(paths, run_ids)
