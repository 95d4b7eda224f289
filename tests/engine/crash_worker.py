"""Run by the engine crash tests: drive workflow runs on a store until killed or done.

Usage::

    python crash_worker.py STORE_URL LEDGER_DB OWNER LEASE_TTL SEED RUN_ID...

STORE_URL is any `firebreak.store.open_store` URL: ``sqlite:////abs/path.db``,
``redis://host:port/db?prefix=P``, ``postgresql://user@host/db?schema=S``.

Starts (or resumes: same code path, ``engine.run(wf, input, run_id=...)``) every RUN_ID
concurrently under one `Engine` with the given lease OWNER and LEASE_TTL. The parent kills
this process with SIGKILL at a random moment and starts it again, many times.

Every agent invocation leaves evidence in a separate SQLite "ledger" (WAL, autocommit, so a
row written before the kill survives it):

* ``calls``: one row per invocation, appended when the agent starts, with the process id,
  the wall-clock start time, and whether the store already held a committed step for this
  agent at that moment (``seen_committed``; read through the store API, on a second store
  instance of this process opened on the same URL, so the engine's own instance, and a
  broken resume that lies to it, cannot colour the answer);
* ``effects``: the side effect, ``INSERT OR IGNORE`` keyed by ``ctx.idempotency_key``; a
  repeated effect of the same key bumps ``repeats`` instead of adding a row.

Protocol on stdout (one line each, flushed): ``ready PID T`` once the store is open (T is
wall-clock seconds), ``lease-held RUN_ID OWNER EXPIRES`` whenever another owner's live
lease makes this process wait, ``done RUN_ID STATUS`` per finished run.

With ``CRASH_WORKER_FORGET_STEPS=1`` the worker resumes wrongly on purpose (it hides the
committed steps from the engine), so a test can show the checks catch a step run twice.
``CRASH_WORKER_SLOWER=S`` makes every step S seconds longer: a test that kills the worker
once a run has committed some steps needs the run still going when the kill lands, however
fast this machine and however long the parent takes to open its own store connection.
With ``CRASH_WORKER_SWEEP=1`` it starts no run: it calls ``engine.resume_due`` (as cron
would ``firebreak resume --due``) until every RUN_ID is finished.
"""

from __future__ import annotations

import asyncio
import os
import random
import sqlite3
import sys
import time
from typing import Any

from firebreak import Workflow
from firebreak.engine import Context, Engine
from firebreak.errors import LeaseHeld
from firebreak.store import CheckpointStore, RunStatus, open_store

AGENTS = ("fetch", "left", "right", "side", "join", "c1", "c2", "c3", "final")
"""Every agent of the workflow below, in definition order."""

DEPENDENCIES: dict[str, tuple[str, ...]] = {
    "fetch": (),
    "left": ("fetch",),
    "right": ("fetch",),
    "side": ("fetch",),
    "join": ("left", "right"),
    "c1": ("join",),
    "c2": ("c1",),
    "c3": ("c2",),
    "final": ("c3", "side"),
}
"""Who waits for whom: a diamond (fetch → left, right → join), a chain after it
(c1 → c2 → c3), and a long concurrent branch (side) that meets the chain at the end."""

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    key TEXT NOT NULL,
    pid INTEGER NOT NULL,
    started_at REAL NOT NULL,
    seen_committed INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS effects (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    repeats INTEGER NOT NULL DEFAULT 0
);
"""


def expected_outputs(n: int) -> dict[str, int]:
    """What each agent returns for run input ``{"n": n}``: the final check of the tests."""
    out = {"fetch": n}
    out["left"] = out["fetch"] * 2
    out["right"] = out["fetch"] + 7
    out["side"] = out["fetch"] * 3
    out["join"] = out["left"] + out["right"]
    out["c1"] = out["join"] + 1
    out["c2"] = out["c1"] * 2
    out["c3"] = out["c2"] + 3
    out["final"] = out["c3"] + out["side"]
    return out


def connect_ledger(path: str) -> sqlite3.Connection:
    """Open (and create) the ledger: WAL, autocommit, every statement its own transaction."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(LEDGER_SCHEMA)
    return conn


class Ledger:
    """The side-effect ledger and the store reader used to judge each invocation."""

    def __init__(self, ledger_path: str, checker: CheckpointStore, seed: int) -> None:
        self.conn = connect_ledger(ledger_path)
        # A store instance of our own on the same URL: did a committed step exist already?
        self.checker = checker
        self.rng = random.Random(seed)
        self.slower = float(os.environ.get("CRASH_WORKER_SLOWER", "0"))  # s more per step
        self.pid = os.getpid()

    async def called(self, ctx: Context) -> None:
        """Record an invocation, noting whether its step was already committed."""
        seen = int(ctx.agent in await self.checker.get_steps(ctx.run_id))
        self.conn.execute(
            "INSERT INTO calls (run_id, agent, key, pid, started_at, seen_committed)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (ctx.run_id, ctx.agent, ctx.idempotency_key, self.pid, time.time(), seen),
        )

    def apply(self, ctx: Context, value: int) -> None:
        """The side effect: applied once per idempotency key, repeats only counted."""
        self.conn.execute(
            "INSERT INTO effects (key, value, pid) VALUES (?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET repeats = repeats + 1",
            (ctx.idempotency_key, value, self.pid),
        )

    async def work(self, ctx: Context, value: int) -> int:
        """What every agent does: record the call, work a few ms, apply the effect."""
        await self.called(ctx)
        await asyncio.sleep(self.rng.uniform(0.002, 0.012) + self.slower)
        self.apply(ctx, value)
        await asyncio.sleep(self.rng.uniform(0.0, 0.003))
        return value


def build_workflow(ledger: Ledger) -> Workflow:
    """The crash workflow: nine agents, each a side effect keyed by its idempotency key."""
    wf = Workflow("crash")
    work = ledger.work

    @wf.agent
    async def fetch(ctx: Context, job: dict[str, int]) -> int:
        return await work(ctx, job["n"])

    @wf.agent(after=[fetch])
    async def left(ctx: Context, fetch: int) -> int:
        return await work(ctx, fetch * 2)

    @wf.agent(after=[fetch])
    async def right(ctx: Context, fetch: int) -> int:
        return await work(ctx, fetch + 7)

    @wf.agent(after=[fetch])
    async def side(ctx: Context, fetch: int) -> int:
        # The long branch: runs beside the whole diamond and part of the chain.
        value = await work(ctx, fetch * 3)
        await asyncio.sleep(0.02)
        return value

    @wf.agent(after=[left, right])
    async def join(ctx: Context, left: int, right: int) -> int:
        return await work(ctx, left + right)

    @wf.agent(after=[join])
    async def c1(ctx: Context, join: int) -> int:
        return await work(ctx, join + 1)

    @wf.agent(after=[c1])
    async def c2(ctx: Context, c1: int) -> int:
        return await work(ctx, c1 * 2)

    @wf.agent(after=[c2])
    async def c3(ctx: Context, c2: int) -> int:
        return await work(ctx, c2 + 3)

    @wf.agent(after=[c3, side])
    async def final(ctx: Context, c3: int, side: int) -> int:
        return await work(ctx, c3 + side)

    assert tuple(wf.agents) == AGENTS
    return wf


def run_input(run_id: str) -> dict[str, int]:
    """The input of a run, derived from its id so every restart passes the same one."""
    return {"n": sum(map(ord, run_id)) % 97}


def say(line: str) -> None:
    """One protocol line to the parent, flushed at once (the next instant may be SIGKILL)."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def drive(engine: Engine, wf: Workflow, run_id: str) -> Any:
    """Run or resume `run_id`; wait out another owner's live lease, then take the run over."""
    while True:
        try:
            return await engine.run(wf, run_input(run_id), run_id=run_id)
        except LeaseHeld as exc:
            say(f"lease-held {run_id} {exc.owner} {exc.expires_at!r}")
            await asyncio.sleep(max(exc.expires_at - time.time(), 0.0) + 0.01)


async def main(argv: list[str]) -> None:
    store_url, ledger_path, owner, ttl, seed, *run_ids = argv
    ledger_conn = connect_ledger(ledger_path)  # create the ledger before the store is read
    ledger_conn.close()
    async with open_store(store_url) as store, open_store(store_url) as checker:
        ledger = Ledger(ledger_path, checker, int(seed))
        wf = build_workflow(ledger)
        if os.environ.get("CRASH_WORKER_FORGET_STEPS"):
            # A deliberately broken resume, to prove the tests' checks catch one: the engine
            # sees no committed steps, so it runs every step of a resumed run again.
            async def no_steps(run_id: str) -> dict[str, Any]:
                return {}

            store.get_steps = no_steps  # type: ignore[method-assign]
        engine = Engine(store, owner=owner, lease_ttl=float(ttl))
        say(f"ready {os.getpid()} {time.time()!r}")
        if os.environ.get("CRASH_WORKER_SWEEP"):
            # Recovery as cron would do it: no run ids, only `resume_due`, again until
            # the dead owner's leases have expired and every run is finished.
            await sweep(engine, wf, run_ids)
            return
        results = await asyncio.gather(*(drive(engine, wf, run_id) for run_id in run_ids))
        for result in results:
            say(f"done {result.run_id} {result.status}")


FINISHED = frozenset({RunStatus.SUCCEEDED, RunStatus.DEGRADED, RunStatus.FAILED})


async def sweep(engine: Engine, wf: Workflow, run_ids: list[str]) -> None:
    """`resume_due` until none of `run_ids` is unfinished; say what each pass resumed."""
    unfinished = set(run_ids)
    while unfinished:
        for result in await engine.resume_due({wf.name: wf}):
            say(f"done {result.run_id} {result.status}")
        for run_id in list(unfinished):
            record = await engine.store.get_run(run_id)
            if record is not None and record.status in FINISHED:
                unfinished.discard(run_id)
        await asyncio.sleep(0.02)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
