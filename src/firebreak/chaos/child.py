"""The child process of the process scenarios: an orchestrator or a worker that may be killed.

Usage (the parent, `firebreak.chaos.processes`, writes the spec)::

    python -m firebreak.chaos.child SPEC.json

The spec (JSON) names the role (``orchestrator`` or ``worker``), the target to rebuild
(``MODULE:ATTR`` and keyword arguments), the store URL, the bus URL (workers, and an
orchestrator that publishes its steps), the side-effect ledger, the lease owner, the seed,
the time scale, extra faults and option overrides, and the runs ``[[run_id, input], ...]``.

The orchestrator starts (or resumes: the same ``engine.run(wf, input, run_id=...)``) every
run; a run that does not exist yet starts ``i * gap`` simulated seconds in. A worker runs the
bus's step tasks with `firebreak.engine.worker.Worker`, the class ``firebreak worker`` runs.

Every agent invocation leaves evidence in the ledger (SQLite, WAL, autocommit, so a row
written before a SIGKILL survives it), as ``tests/engine/crash_worker.py`` does:

* ``calls``: one row per invocation when the agent starts: run, agent, idempotency key,
  process id, wall time, and whether the store already held a committed result for the
  step (read on a second store instance, so the engine's own cannot colour the answer);
* ``effects``: the side effect, applied when the agent returns, keyed by
  ``ctx.idempotency_key``: a repeat of the same key bumps ``repeats`` (an idempotent sink
  absorbs it) instead of adding a row.

Protocol on stdout, a line each, flushed (the next instant may be SIGKILL): ``ready PID
WALL`` once the store (and bus) are open, ``call RUN AGENT`` as an agent starts, ``step
RUN AGENT STATUS`` as the orchestrator commits a step, ``done RUN STATUS`` per run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import importlib
import json
import os
import signal
import sqlite3
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from firebreak.chaos.faults import Fault
from firebreak.chaos.inject import Injector, inject
from firebreak.chaos.targets import Target
from firebreak.clock import Cancellable, Clock, system_clock
from firebreak.engine import Context, Engine
from firebreak.errors import LeaseHeld
from firebreak.events import Event, StepStateChanged, hub
from firebreak.resilience import BreakerRegistry
from firebreak.store import CheckpointStore, open_store
from firebreak.workflow import Workflow

__all__ = ["LEDGER_SCHEMA", "ScaledClock", "connect_ledger", "main"]

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
    run_id TEXT NOT NULL,
    agent TEXT NOT NULL,
    pid INTEGER NOT NULL,
    applied_at REAL NOT NULL,
    repeats INTEGER NOT NULL DEFAULT 0
);
"""
"""The side-effect ledger (see the module docstring)."""

_COMMITTED = frozenset({"succeeded", "degraded"})


def connect_ledger(path: str | Path) -> sqlite3.Connection:
    """Open (and create) the ledger: WAL, autocommit, every statement its own transaction."""
    conn = sqlite3.connect(path, timeout=10, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.executescript(LEDGER_SCHEMA)
    return conn


class ScaledClock:
    """The system clock with simulated seconds `scale` times as long as real ones.

    ``ScaledClock(0.01)`` runs a simulated 7-second OCR call in 70 ms and fires a
    15-second timeout after 150 ms; wall time (stored timestamps, leases) stays real.
    """

    __slots__ = ("origin", "scale")

    def __init__(self, scale: float) -> None:
        if not scale > 0:
            raise ValueError(f"scale must be > 0, got {scale!r}")
        self.scale = scale
        self.origin = time.monotonic()

    def now(self) -> float:
        """Simulated monotonic seconds since the clock was made."""
        return (time.monotonic() - self.origin) / self.scale

    def wall(self) -> float:
        """Real wall-clock seconds."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` simulated seconds."""
        await asyncio.sleep(max(seconds, 0.0) * self.scale)

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run `callback` when `now()` reaches `when`."""
        return system_clock.call_at(self.origin + when * self.scale, callback)


def say(line: str) -> None:
    """One protocol line to the parent, flushed at once."""
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Ledger:
    """Records every agent invocation and applies its side effect once per key."""

    def __init__(self, path: str, checker: CheckpointStore) -> None:
        self.conn = connect_ledger(path)
        self.checker = checker
        self.pid = os.getpid()

    async def called(self, ctx: Context) -> None:
        """Record an invocation, noting whether its step was already committed."""
        committed = (await self.checker.get_steps(ctx.run_id)).get(ctx.agent)
        seen = int(committed is not None and committed.status.value in _COMMITTED)
        self.conn.execute(
            "INSERT INTO calls (run_id, agent, key, pid, started_at, seen_committed)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (ctx.run_id, ctx.agent, ctx.idempotency_key, self.pid, time.time(), seen),
        )
        say(f"call {ctx.run_id} {ctx.agent}")

    def apply(self, ctx: Context) -> None:
        """The side effect: applied once per idempotency key, repeats only counted."""
        self.conn.execute(
            "INSERT INTO effects (key, run_id, agent, pid, applied_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (key) DO UPDATE SET repeats = repeats + 1",
            (ctx.idempotency_key, ctx.run_id, ctx.agent, self.pid, time.time()),
        )

    def around(self, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        """`fn` with its invocation recorded and its effect applied when it returns."""

        @functools.wraps(fn)
        async def audited(ctx: Context, /, **kwargs: Any) -> Any:
            await self.called(ctx)
            output = await fn(ctx, **kwargs)
            self.apply(ctx)
            return output

        return audited


def resolve(ref: str, kwargs: Mapping[str, Any]) -> Target | Workflow:
    """The `Target` or `Workflow` that ``MODULE:ATTR`` names (a function is called)."""
    module_name, _, attr = ref.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    if not isinstance(obj, Target | Workflow) and callable(obj):
        obj = obj(**kwargs)
    if not isinstance(obj, Target | Workflow):
        raise TypeError(f"{ref!r} names neither a chaos Target nor a Workflow")
    return obj


def build(spec: Mapping[str, Any], clock: Clock, ledger: Ledger) -> Workflow:
    """The target's workflow on `clock`, with the spec's faults and overrides, audited."""
    found = resolve(spec["target"], spec.get("target_kwargs") or {})
    base = found if isinstance(found, Workflow) else found.build(clock)
    faults = tuple(Fault.from_dict(f) for f in spec.get("faults") or ())
    injector = Injector(faults, int(spec["seed"]), clock, clock.now()) if faults else None
    return inject(base, injector, overrides=spec.get("overrides") or {}, around=ledger.around)


async def _drive(
    engine: Engine, wf: Workflow, run_id: str, value: Any, *, start: float, clock: Clock
) -> None:
    if await engine.store.get_run(run_id) is None and start > 0:
        await clock.sleep(start)  # a new run arrives on its schedule; a resume at once
    while True:
        try:
            result = await engine.run(wf, value, run_id=run_id)
        except LeaseHeld as exc:
            await asyncio.sleep(max(exc.expires_at - time.time(), 0.0) + 0.01)
            continue
        say(f"done {run_id} {result.status.value}")
        return


def _announce(event: Event) -> None:
    if isinstance(event, StepStateChanged):
        say(f"step {event.run_id} {event.agent} {event.status}")


async def orchestrate(spec: Mapping[str, Any]) -> None:
    """Drive (or resume) every run of the spec to its end."""
    clock = ScaledClock(float(spec["scale"]))
    url = spec["store"]
    async with contextlib.AsyncExitStack() as stack:
        store = await stack.enter_async_context(open_store(url))
        checker = await stack.enter_async_context(open_store(url))
        ledger = Ledger(spec["ledger"], checker)
        wf = build(spec, clock, ledger)
        registry = BreakerRegistry(clock=clock)
        executor: Any = None
        if spec.get("bus"):
            from firebreak.bus import open_bus  # noqa: PLC0415 - only with a bus
            from firebreak.engine.bus_executor import BusExecutor  # noqa: PLC0415

            bus = await stack.enter_async_context(open_bus(spec["bus"]))
            executor = await stack.enter_async_context(
                BusExecutor(bus, store, clock=clock, poll=0.5)
            )
        engine = Engine(
            store,
            executor=executor,
            owner=spec["owner"],
            lease_ttl=float(spec.get("lease_ttl", 30.0)),
            clock=clock,
            registry=registry,
        )
        stack.callback(hub.subscribe(_announce))
        say(f"ready {os.getpid()} {time.time()!r}")
        gap = float(spec.get("gap", 0.0))
        await asyncio.gather(
            *(
                _drive(engine, wf, run_id, value, start=i * gap, clock=clock)
                for i, (run_id, value) in enumerate(spec["runs"])
            )
        )


async def serve(spec: Mapping[str, Any]) -> None:
    """Run the bus's step tasks of the target's workflow until SIGTERM."""
    from firebreak.bus import open_bus  # noqa: PLC0415 - workers only
    from firebreak.engine.worker import Worker  # noqa: PLC0415

    clock = ScaledClock(float(spec["scale"]))
    url = spec["store"]
    async with open_store(url) as store, open_store(url) as checker, open_bus(spec["bus"]) as bus:
        ledger = Ledger(spec["ledger"], checker)
        wf = build(spec, clock, ledger)
        worker = Worker(
            wf,
            bus=bus,
            store=store,
            concurrency=int(spec.get("concurrency", 4)),
            name=spec.get("name"),
            drain=5.0,
            registry=BreakerRegistry(clock=clock),
            clock=clock,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        say(f"ready {os.getpid()} {time.time()!r}")
        await worker.run()


def main(argv: list[str] | None = None) -> None:
    """Entry point: ``python -m firebreak.chaos.child SPEC.json``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        sys.exit("usage: python -m firebreak.chaos.child SPEC.json")
    spec = json.loads(Path(args[0]).read_text("utf-8"))
    role = spec.get("role")
    if role == "orchestrator":
        asyncio.run(orchestrate(spec))
    elif role == "worker":
        asyncio.run(serve(spec))
    else:
        sys.exit(f"unknown role {role!r}: orchestrator or worker")


if __name__ == "__main__":
    main()
