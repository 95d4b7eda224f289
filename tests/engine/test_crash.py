"""Real crashes: SIGKILL an orchestrator process mid-run, many times, and resume.

`crash_worker.py` drives runs of a nine-agent workflow (a diamond, a chain, a long
concurrent branch) on a store named by URL; every agent applies a side effect keyed by
``ctx.idempotency_key`` to a separate ledger database and records each invocation. These
tests kill it with SIGKILL at seeded random moments, restart it on the same run ids (the
same code path: ``engine.run(wf, input, run_id=...)`` resumes an existing run), and check
that every run ends with every step committed exactly once, every side effect applied once,
and no step that was committed before a kill ever ran again.

Every test runs on each backend: SQLite (a file of the test's own), Redis
(``$FIREBREAK_TEST_REDIS_URL``, default ``redis://127.0.0.1:6379/15``, a key prefix of the
test's own, destroyed afterwards) and PostgreSQL (``$FIREBREAK_TEST_POSTGRES_URL``, default
``postgresql://postgres@127.0.0.1:5432/postgres``, a schema of the test's own, dropped
afterwards). An unreachable server skips its tests, or fails them under ``CI=true``
(``tests/servers.py``). The parent reads the store through the store API only.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from crash_worker import AGENTS, DEPENDENCIES, expected_outputs, run_input

from firebreak.errors import StaleLease
from firebreak.store import CheckpointStore, Lease, RunStatus, StepStatus, open_store
from servers import require_server

HERE = Path(__file__).parent
WORKER = HERE / "crash_worker.py"
SRC = HERE.parents[1] / "src"
OWNER = "crash-orchestrator"  # stable across restarts: the new process re-enters its lease
TIMEOUT = 20.0  # seconds any one worker process may take; far above the ~0.1 s it needs
# Steps 50 ms longer (a run takes about half a second): a kill on a run's second commit
# lands mid-run even when the parent's own store connection took 100 ms to open.
SLOWER = {"CRASH_WORKER_SLOWER": "0.05"}

BACKENDS = ("sqlite", "redis", "postgres")
SERVER_URLS = {
    "redis": ("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    "postgres": ("FIREBREAK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
}
NAMESPACE_OPTION = {"redis": "prefix", "postgres": "schema"}
# Seeds and kills per seed: every seed on SQLite (cheap); fewer on the servers, whose
# workers take longer to start (imports, connections) - the same paths, fewer repeats.
SEEDS = {"sqlite": (11, 22, 33, 44, 55), "redis": (11, 22, 33), "postgres": (11, 22, 33)}
KILLS = {"sqlite": 5, "redis": 4, "postgres": 4}


@dataclass(slots=True)
class Paths:
    """Where one test's runs live: the store (by URL) and the side-effect ledger."""

    kind: str
    store: str  # an open_store URL
    ledger: Path
    db: Path | None = None  # the SQLite file, for the sqlite backend
    server: str | None = None  # the server's URL, for redis and postgres
    used: bool = False  # the server was reached: the namespace needs destroying

    def open(self) -> CheckpointStore:
        return open_store(self.store)

    def exists(self) -> bool:
        """Whether a worker may have created the store yet (the SQLite file; servers: yes)."""
        return self.db is None or self.db.exists()


def _with_option(url: str, key: str, value: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}{key}={value}"


@pytest.fixture
async def paths(backend: str, tmp_path: Path) -> AsyncIterator[Paths]:
    """The test's store: a SQLite file, or a Redis prefix / PostgreSQL schema of its own."""
    ledger = tmp_path / "ledger.db"
    if backend == "sqlite":
        db = tmp_path / "store.db"
        yield Paths(backend, f"sqlite:///{db}", ledger, db=db)
        return
    env, default = SERVER_URLS[backend]
    server = os.environ.get(env, default)
    name = f"fbcrash_{uuid.uuid4().hex[:16]}"
    found = Paths(backend, _with_option(server, NAMESPACE_OPTION[backend], name), ledger)
    found.server = server
    try:
        yield found
    finally:
        if found.used:
            async with found.open() as store:
                await store.destroy()  # type: ignore[attr-defined]  # server backends only


def _require(paths: Paths) -> None:
    """Inside the test, so an unreachable server fails it under CI=true, else skips it."""
    if paths.server is not None:
        require_server(paths.kind, paths.server)
        paths.used = True


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
    args = [paths.store, str(paths.ledger), owner, str(ttl), str(seed), *run_ids]
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
                await _until_committed(paths, kill_when, 2)
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


async def _until_committed(paths: Paths, run_id: str, count: int) -> None:
    # The worker said "ready": its store is open, so the schema is in place.
    async with paths.open() as store:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if len(await store.get_steps(run_id)) >= count:
                return
            await asyncio.sleep(0.001)
    raise AssertionError(f"run {run_id!r} never committed {count} steps")


async def _unfinished(paths: Paths, run_ids: list[str]) -> list[str]:
    if not run_ids or not paths.exists():
        return list(run_ids)
    async with paths.open() as store:
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
    async with paths.open() as store:
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
@pytest.mark.parametrize(
    ("backend", "seed"),
    [pytest.param(kind, seed, id=f"{kind}-{seed}") for kind in BACKENDS for seed in SEEDS[kind]],
)
async def test_runs_survive_repeated_sigkill_with_every_step_committed_once(
    paths: Paths, backend: str, seed: int
) -> None:
    """Seeded SIGKILLs (five per seed on SQLite, four on the servers), then a clean finish:
    exactly once.
    """
    _require(paths)
    rng = random.Random(seed)
    run_ids: list[str] = []
    kills = interrupted = 0
    life_no = 0
    while kills < KILLS[backend]:
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

    if paths.db is not None:
        conn = sqlite3.connect(paths.db)  # the file is intact after all those recoveries
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_in_flight_steps_run_again_after_a_kill_and_apply_their_effect_once(
    paths: Paths,
) -> None:
    """A kill mid-step: the step runs again on resume with the same key; one effect."""
    _require(paths)
    run_ids = ["inflight-0", "inflight-1", "inflight-2"]
    life = await _live(paths, run_ids, seed=1, kill_when="inflight-0")
    assert life.killed
    started = {
        (run_id, agent) for run_id, agent in _ledger(paths, "SELECT run_id, agent FROM calls")
    }
    async with paths.open() as store:
        done = {(r, a) for r in run_ids for a in await store.get_steps(r)}
    assert done < started or done == started  # nothing commits without having started
    await _live(paths, run_ids, seed=2)
    reruns = await _check_runs(paths, run_ids)
    # Whatever was started but not committed when the process died ran again; nothing else.
    assert reruns == len(started - done)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_another_owner_takes_a_killed_run_over_only_after_its_lease_expires(
    paths: Paths,
) -> None:
    """A killed orchestrator's lease blocks a new owner until it expires, then fences it."""
    _require(paths)
    run_ids = ["takeover-0", "takeover-1", "takeover-2"]
    ttl = 0.5
    killed = await _live(
        paths, run_ids, seed=1, owner="orchestrator-a", ttl=ttl, kill_when=run_ids[0], env=SLOWER
    )
    assert killed.killed
    async with paths.open() as store:
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
    async with paths.open() as store:
        for run_id, lease in old_leases.items():
            rec = await store.get_run(run_id)
            assert rec is not None
            assert rec.lease_token == lease.token + 1  # the takeover took a new fencing token
            with pytest.raises(StaleLease):  # the dead owner's token is refused from now on
                await store.set_run_status(lease, RunStatus.FAILED)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_resume_due_alone_recovers_every_run_a_killed_orchestrator_left(
    paths: Paths,
) -> None:
    """Recovery with no run ids (cron's ``firebreak resume --due``): once the dead owner's
    leases expire, every run it left is found, resumed and finished, each step once."""
    _require(paths)
    run_ids = [f"swept-{i}" for i in range(3)]
    ttl = 0.5
    killed = await _live(
        paths, run_ids, seed=1, owner="dead", ttl=ttl, kill_when=run_ids[0], env=SLOWER
    )
    assert killed.killed
    async with paths.open() as store:
        left = {run_id: await store.get_run(run_id) for run_id in run_ids}
    assert all(rec is not None for rec in left.values())  # all began before the kill
    stranded = {r for r, rec in left.items() if rec is not None and rec.status is RunStatus.RUNNING}
    assert run_ids[0] in stranded, {
        r: rec and (rec.status, rec.lease_owner) for r, rec in left.items()
    }

    sweeper = await _live(
        paths, run_ids, seed=4, owner="sweeper", ttl=ttl, env={"CRASH_WORKER_SWEEP": "1"}
    )
    assert not sweeper.killed
    resumed = {line.split()[1] for line in sweeper.lines if line.startswith("done ")}
    assert resumed == stranded  # each stranded run, and no finished one
    await _check_runs(paths, run_ids)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_the_checks_catch_a_resume_that_runs_committed_steps_again(paths: Paths) -> None:
    """The oracle is not vacuous: a worker that forgets its checkpoints fails the checks."""
    _require(paths)
    run_ids = ["broken-0"]
    # SLOWER: the run must still be going when the kill lands (on Redis it could end first).
    assert (await _live(paths, run_ids, seed=1, kill_when=run_ids[0], env=SLOWER)).killed
    await _live(paths, run_ids, seed=2, env={"CRASH_WORKER_FORGET_STEPS": "1"})
    with pytest.raises(AssertionError, match="ran again"):
        await _check_runs(paths, run_ids)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_a_run_of_a_killed_default_owner_on_this_machine_is_taken_over_at_once(
    paths: Paths,
) -> None:
    """With default owner ids (no ``owner=``), a process restarted on the machine where the
    killed one ran resumes its runs at once: the dead holder's process is gone, so its
    lease (30 s here) need not be waited out. The takeover still fences the dead owner."""
    _require(paths)
    run_ids = ["restart-0", "restart-1"]
    killed = await _live(paths, run_ids, seed=1, owner="", kill_when=run_ids[0], env=SLOWER)
    assert killed.killed
    async with paths.open() as store:
        rec = await store.get_run(run_ids[0])
    assert rec is not None
    assert rec.status is RunStatus.RUNNING
    assert rec.lease_owner is not None
    assert rec.lease_owner.split(":")[1] == str(killed.pid)  # the default id names the process
    dead = Lease(run_id=run_ids[0], owner=rec.lease_owner, token=rec.lease_token, expires_at=0.0)

    restarted = await _live(paths, run_ids, seed=2, owner="")
    assert not restarted.killed
    assert not [line for line in restarted.lines if line.startswith("lease-held ")]
    await _check_runs(paths, run_ids)
    async with paths.open() as store:
        with pytest.raises(StaleLease):  # the dead owner's token is refused from now on
            await store.set_run_status(dead, RunStatus.FAILED)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
async def test_resume_due_finds_at_once_the_runs_of_a_killed_default_owner(
    paths: Paths,
) -> None:
    """``firebreak resume --due`` right after a crash: runs leased by a process gone from
    this machine count as interrupted at once, not a lease's time (30 s) later."""
    _require(paths)
    run_ids = [f"restart-swept-{i}" for i in range(2)]
    killed = await _live(paths, run_ids, seed=1, owner="", kill_when=run_ids[0], env=SLOWER)
    assert killed.killed
    sweeper = await _live(paths, run_ids, seed=4, owner="", env={"CRASH_WORKER_SWEEP": "1"})
    assert not sweeper.killed  # within the worker's TIMEOUT (20 s): before the lease expired
    await _check_runs(paths, run_ids)
