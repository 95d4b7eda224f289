"""The process scenarios: SIGKILL the orchestrator or a worker mid-batch, restart, resume.

``orchestrator-kill``: a child process (``python -m firebreak.chaos.child``) drives a batch
of the target's runs on a durable store (a SQLite file in a temporary directory unless
``store`` is given). It is SIGKILLed at seeded moments — after a seeded number of the
batch's steps were committed, or `Fault.after` seconds after it came up — and started again
on the same run ids, with the same lease owner, as a supervisor would; the last life runs to
the end. ``worker-kill``: the orchestrator publishes its steps on a Redis bus to worker
processes (`firebreak.engine.worker.Worker`, what ``firebreak worker`` runs); one worker is
SIGKILLed as it starts a step, and a replacement is started. ``inproc://`` cannot cross
processes: without a ``redis://`` bus the scenario is skipped, saying so.

The simulated services run on `ScaledClock` (``time_scale`` real seconds per simulated
second), so a batch of invoices takes a fraction of a second per life. Every agent call and
side effect goes to a ledger keyed by ``ctx.idempotency_key`` (`firebreak.chaos.child`);
the report counts runs from the store and, from the ledger: duplicated side effects (a step
started although its result was committed, or one step's effect under two keys: must be 0),
steps re-run after a kill (started in two processes; their effect is applied once, the
repeat absorbed by the key) and the resume latency (kill to the interrupted work running
again, real seconds).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, urlsplit

import firebreak
from firebreak.chaos.faults import Fault, Kill, KillTarget
from firebreak.chaos.report import ScenarioReport, percentile
from firebreak.chaos.targets import Target
from firebreak.clock import system_clock
from firebreak.store import RunStatus, StepStatus, open_store

if TYPE_CHECKING:
    from firebreak.chaos.scenarios import ChaosOptions

__all__ = ["kill_fault", "orchestrator_kill", "worker_kill"]

_FINAL: Final = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.DEGRADED,
        RunStatus.FAILED,
        RunStatus.PAUSED,
        RunStatus.NEEDS_REVIEW,
    }
)
_STARTUP: Final = 60.0
"""Seconds a child may take to say ``ready`` (imports, store and bus connections)."""


def kill_fault(options: ChaosOptions, target: KillTarget) -> Fault:
    """The kill fault of a process scenario.

    The last one in `options.faults` for `target`, else `Kill(target, times=options.kills)`.
    """
    given = [f for f in options.faults if f.kind == "kill" and f.target == target]
    return given[-1] if given else Kill(target, times=options.kills)


class _Child:
    """One child process: its stdout lines through a reader thread, stderr in a file."""

    def __init__(self, name: str, spec: dict[str, Any], work: Path) -> None:
        self.name = name
        spec_path = work / f"{name}.json"
        spec_path.write_text(json.dumps(spec, default=str), "utf-8")
        self.log_path = work / f"{name}.log"
        package_root = str(Path(firebreak.__file__).resolve().parents[1])
        paths = [str(Path.cwd()), package_root, *filter(None, [os.environ.get("PYTHONPATH")])]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1"}
        with self.log_path.open("wb") as err:
            self.proc = subprocess.Popen(  # noqa: S603 - our own module, our own interpreter
                [sys.executable, "-m", "firebreak.chaos.child", str(spec_path)],
                stdout=subprocess.PIPE,
                stderr=err,
                env=env,
            )
        self.pid = self.proc.pid
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        self.pending: deque[str] = deque()
        self.eof = False
        self.ready_at: float | None = None
        self.killed_at: float | None = None
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        stdout = self.proc.stdout
        assert stdout is not None  # noqa: S101 - a pipe was asked for
        for raw in stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def _pull(self) -> None:
        while True:
            try:
                line = self.lines.get_nowait()
            except queue.Empty:
                return
            if line is None:
                self.eof = True
                return
            self.seen.append(line)
            self.pending.append(line)

    def skip(self) -> None:
        """Forget the lines read so far: `until` counts only lines printed from now on."""
        self._pull()
        self.pending.clear()

    async def until(
        self,
        prefix: str,
        count: int = 1,
        timeout: float = _STARTUP,  # noqa: ASYNC109 - a deadline per line wait
        *,
        unless: _Child | None = None,
    ) -> bool:
        """Wait for `count` more lines starting with `prefix` (later lines stay pending).

        False if the child (or `unless`) ended first.
        """
        deadline = time.monotonic() + timeout
        found = 0
        while True:
            self._pull()
            while self.pending:
                line = self.pending.popleft()
                if line.startswith(prefix):
                    found += 1
                    if prefix == "ready ":
                        self.ready_at = float(line.split()[2])
                    if found >= count:
                        return True
            if unless is not None:
                unless._pull()  # noqa: SLF001 - the same class
            if self.eof or (unless is not None and unless.eof):
                return False
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.name}: no {prefix.strip()!r} line in {timeout:g}s")
            await asyncio.sleep(0.002)

    def kill(self) -> float:
        """SIGKILL the child (if alive); the wall time of the kill."""
        self.killed_at = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        return self.killed_at

    async def wait(self, timeout: float) -> int:  # noqa: ASYNC109 - then SIGKILL
        """Wait for the child to end (killing it past `timeout`); its return code."""
        try:
            code = await asyncio.wait_for(asyncio.to_thread(self.proc.wait), timeout)
        except TimeoutError:
            self.kill()
            code = await asyncio.to_thread(self.proc.wait)
        await asyncio.to_thread(self._reader.join, 5.0)
        self._pull()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    @property
    def crashed(self) -> bool:
        """Whether it ended with an error of its own (not our SIGKILL, not SIGTERM)."""
        code = self.proc.returncode
        return code not in (None, 0, -signal.SIGKILL, -signal.SIGTERM)

    def stderr_tail(self) -> str:
        text = self.log_path.read_text("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-3:])


@dataclass(slots=True)
class _Kill:
    pid: int
    at: float
    unfinished: set[str]
    restart_at: float | None = None


@dataclass(slots=True)
class _Batch:
    """What one process scenario set up and saw."""

    store: str
    ledger: Path
    run_ids: list[str]
    children: list[_Child] = field(default_factory=list)
    kills: list[_Kill] = field(default_factory=list)


@contextlib.contextmanager
def _workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="firebreak-chaos-") as tmp:
        yield Path(tmp)


def _spec(  # noqa: PLR0917 - one call site each, all needed
    target: Target,
    options: ChaosOptions,
    batch: _Batch,
    inputs: list[tuple[str, Any]],
    overrides: dict[str, dict[str, Any]],
    scale: float,
) -> dict[str, Any]:
    return {
        "target": target.ref,
        "target_kwargs": dict(target.ref_kwargs),
        "store": batch.store,
        "ledger": str(batch.ledger),
        "seed": options.seed,
        "scale": options.time_scale or scale,
        "gap": options.gap,
        "faults": [dataclasses.asdict(f) for f in options.faults if f.kind != "kill"],
        "overrides": overrides,
        "runs": inputs,
    }


async def _unfinished(store_url: str, run_ids: list[str]) -> set[str]:
    async with open_store(store_url) as store:
        records = {r: await store.get_run(r) for r in run_ids}
    return {r for r, rec in records.items() if rec is None or rec.status not in _FINAL}


async def _committed(store_url: str, run_ids: list[str]) -> int:
    async with open_store(store_url) as store:
        return sum([len(await store.get_steps(r)) for r in run_ids])


def _ledger_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    if not path.exists():
        return []
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def _tally(report: ScenarioReport, batch: _Batch, workflow: str) -> None:  # noqa: PLR0915 - one pass over store and ledger
    """Counts from the store, side effects and re-runs from the ledger, resume latency."""
    async with open_store(batch.store) as store:
        records = {r: await store.get_run(r) for r in batch.run_ids}
        steps = {r: await store.get_steps(r) for r in batch.run_ids}
        entries = await store.dlq_list(workflow)
    counted = [None if rec is None else rec.status for rec in records.values()]
    report.runs = len(records)
    report.succeeded = counted.count(RunStatus.SUCCEEDED)
    report.degraded = counted.count(RunStatus.DEGRADED)
    report.paused = counted.count(RunStatus.PAUSED)
    report.failed = counted.count(RunStatus.FAILED)
    report.needs_review = counted.count(RunStatus.NEEDS_REVIEW)
    report.lost = sum(1 for s in counted if s not in _FINAL)
    report.dead_lettered = sum(1 for e in entries if e.run_id in records)

    calls = _ledger_rows(
        batch.ledger, "SELECT run_id, agent, pid, started_at, seen_committed FROM calls"
    )
    effects = _ledger_rows(batch.ledger, "SELECT key, run_id, agent, pid, repeats FROM effects")
    ours = set(batch.run_ids)
    calls = [c for c in calls if c[0] in ours]
    effects = [e for e in effects if e[1] in ours]
    # Duplicated: a call that found its step committed, or started after the commit; a
    # step whose effect went out under two idempotency keys (the sink could not dedupe).
    after_commit = 0
    for run_id, agent, _, started_at, seen in calls:
        rec = steps[run_id].get(agent)
        done_at = (
            rec.completed_at
            if rec is not None and rec.status in (StepStatus.SUCCEEDED, StepStatus.DEGRADED)
            else None
        )
        after_commit += int(bool(seen) or (done_at is not None and started_at > done_at))
    keys: defaultdict[tuple[str, str], set[str]] = defaultdict(set)
    for key, run_id, agent, _, _ in effects:
        keys[(run_id, agent)].add(key)
    split_keys = sum(len(k) - 1 for k in keys.values())
    report.duplicated = after_commit + split_keys
    pids: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
    for run_id, agent, pid, _, _ in calls:
        pids[(run_id, agent)].add(pid)
    missing = sum(
        1
        for run_id, by_agent in steps.items()
        for agent, rec in by_agent.items()
        if rec.status is StepStatus.SUCCEEDED and (run_id, agent) not in keys
    )
    report.figures["steps_rerun"] = sum(len(p) - 1 for p in pids.values())
    report.figures["effects_applied"] = len(effects)
    report.figures["effect_repeats_absorbed"] = sum(e[4] for e in effects)
    report.figures["effects_missing"] = missing
    report.figures["ran_after_commit"] = after_commit

    # Resume latency: from the kill until the work it interrupted runs again — its in-flight
    # steps started in another process, else the first step of an interrupted run.
    effect_by = {(e[1], e[2], e[3]) for e in effects}
    latencies: list[float] = []
    for kill in batch.kills:
        inflight = {
            (r, a) for r, a, pid, _, _ in calls if pid == kill.pid and (r, a, pid) not in effect_by
        }
        later = [c for c in calls if c[2] != kill.pid and c[3] >= kill.at]
        if inflight:
            again = [
                min((c[3] for c in later if (c[0], c[1]) == pair), default=None)
                for pair in inflight
            ]
            if all(t is not None for t in again):
                latencies.append(max(t for t in again if t is not None) - kill.at)
                continue
        first = min((c[3] for c in later if c[0] in kill.unfinished), default=None)
        if first is not None:
            latencies.append(first - kill.at)
    restarts = [k.restart_at - k.at for k in batch.kills if k.restart_at is not None]
    report.figures["kills"] = len(batch.kills)
    report.figures["kills_mid_batch"] = sum(1 for k in batch.kills if k.unfinished)
    report.figures["p50_resume"] = round(percentile(latencies, 50), 3)
    report.figures["max_resume"] = round(max(latencies, default=0.0), 3)
    report.figures["restart_s"] = round(max(restarts, default=0.0), 3)
    crashed = [c for c in batch.children if c.crashed]
    report.figures["crashes"] = len(crashed)
    for child in crashed[:2]:
        report.notes.append(
            f"{child.name} exited {child.proc.returncode}: {child.stderr_tail() or 'no stderr'}"
        )


def _criteria(report: ScenarioReport, kill: Fault, what: str) -> None:
    mid = int(report.figures.get("kills_mid_batch", 0))
    report.require(
        f"the {what} was killed mid-batch",
        mid >= 1 and report.figures.get("kills", 0) == kill.times,
        f"{mid} of {kill.times} SIGKILLs landed with runs unfinished",
    )
    done = report.runs - report.lost
    report.require(
        "every run resumed to an end under its own id",
        report.lost == 0 and report.paused == 0,
        f"{done} of {report.runs} ended; paused {report.paused}",
    )
    report.require("no run lost", report.lost == 0, f"lost = {report.lost}")
    report.require(
        "no side effect duplicated",
        report.duplicated == 0,
        f"duplicated = {report.duplicated} ({report.figures.get('ran_after_commit', 0):g} "
        f"calls after their step's commit); {report.figures.get('steps_rerun', 0):g} steps "
        f"re-ran after a kill, {report.figures.get('effect_repeats_absorbed', 0):g} effect "
        "repeats absorbed by the idempotency key",
    )
    report.require(
        "every committed step's effect applied",
        report.figures.get("effects_missing", 0) == 0,
        f"{report.figures.get('effects_missing', 0):g} committed steps without their effect",
    )
    report.require(
        "nothing crashed",
        report.figures.get("crashes", 0) == 0,
        f"{report.figures.get('crashes', 0):g} child processes failed on their own",
    )


def _new_report(name: str, target: Target, options: ChaosOptions, kill: Fault) -> ScenarioReport:
    from firebreak.chaos.scenarios import _overrides  # noqa: PLC0415 - no import cycle

    workflow = target.build(system_clock).name
    report = ScenarioReport(
        scenario=name,
        workflow=workflow,
        overrides=_overrides(target, name, options),
        time="real",
    )
    report.faults = [kill.label, *(f.label for f in options.faults if f.kind != "kill")]
    if target.ref is None:
        report.skipped = (
            f"target {target.name!r} has no ref: a child process cannot rebuild it (give "
            "Target(ref='MODULE:ATTR') or run a MODULE:TARGET / MODULE:WORKFLOW from the CLI)"
        )
    return report


def _runs(target: Target, options: ChaosOptions, tag: str) -> list[tuple[str, Any]]:
    nonce = uuid.uuid4().hex[:6]  # a server store may hold an earlier batch: fresh ids
    return [(f"{tag}-{options.seed}-{nonce}-{i}", target.make_input(i)) for i in range(options.n)]


@contextlib.asynccontextmanager
async def _children(batch: _Batch) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for child in batch.children:
            if child.proc.poll() is None:
                child.kill()
            await child.wait(10.0)


async def _kill_moment(
    child: _Child,
    kill: Fault,
    rng: random.Random,
    prefix: str,
    most: int,
    *,
    unless: _Child | None = None,
) -> bool:
    """Wait for the seeded kill moment; False if the child (or `unless`) ended first.

    The moment is `kill.after` seconds from now, else a seeded count in ``[1, most]`` of
    `prefix` lines.
    """
    child.skip()
    if kill.after is not None:
        end = time.monotonic() + kill.after
        while time.monotonic() < end:
            child.skip()
            if unless is not None:
                unless.skip()
            if child.eof or (unless is not None and unless.eof):
                return False
            await asyncio.sleep(0.002)
        return True
    count = rng.randint(1, max(1, most))
    return await child.until(prefix, count, _STARTUP, unless=unless)


async def orchestrator_kill(target: Target, options: ChaosOptions) -> ScenarioReport:
    """SIGKILL the orchestrator process mid-batch, restart it: every run resumes, once."""
    kill = kill_fault(options, "orchestrator")
    report = _new_report("orchestrator-kill", target, options, kill)
    if report.skipped:
        return report
    width = len(target.build(system_clock))
    rng = random.Random(f"{options.seed}/orchestrator-kill")
    with _workdir() as work:
        inputs = _runs(target, options, "okill")
        batch = _Batch(
            store=options.store or f"sqlite:///{work / 'chaos.db'}",
            ledger=work / "ledger.db",
            run_ids=[r for r, _ in inputs],
        )
        spec = _spec(target, options, batch, inputs, report.overrides, 0.01)
        spec |= {"role": "orchestrator", "owner": f"chaos-orchestrator-{uuid.uuid4().hex[:8]}"}
        async with _children(batch):
            for life in range(kill.times):
                child = _Child(f"orchestrator-{life}", spec, work)
                batch.children.append(child)
                if not await child.until("ready "):
                    break
                if batch.kills:
                    batch.kills[-1].restart_at = child.ready_at
                # A seeded number of commits within the first half of the steps still to
                # commit: runs advance nearly in step, so a later kill may find them done.
                left = width * options.n - await _committed(batch.store, batch.run_ids)
                if not await _kill_moment(child, kill, rng, "step ", left // 2):
                    report.notes.append(f"the batch ended before kill {life + 1}")
                    break
                at = child.kill()
                await child.wait(10.0)
                unfinished = await _unfinished(batch.store, batch.run_ids)
                batch.kills.append(_Kill(child.pid, at, unfinished))
            final = _Child(f"orchestrator-{len(batch.children)}", spec, work)
            batch.children.append(final)
            if await final.until("ready ") and batch.kills:
                batch.kills[-1].restart_at = final.ready_at
            await final.wait(options.process_timeout)
        await _tally(report, batch, report.workflow)
    _criteria(report, kill, "orchestrator")
    return report


def _bus_url(url: str) -> tuple[str, str | None]:
    """`url` with a fresh prefix and a 1 s visibility timeout unless given; the new prefix."""
    given = dict(parse_qsl(urlsplit(url).query))
    extra: dict[str, str] = {}
    prefix = None
    if "prefix" not in given:
        prefix = extra["prefix"] = f"fbchaos-{uuid.uuid4().hex[:10]}"
    if "visibility_timeout" not in given:
        extra["visibility_timeout"] = "1"  # a killed worker's step is redelivered in ~1 s
    if not extra:
        return url, prefix
    tail = "&".join(f"{k}={v}" for k, v in extra.items())
    return f"{url}{'&' if '?' in url else '?'}{tail}", prefix


async def _drop_keys(url: str, prefix: str) -> None:
    with contextlib.suppress(Exception):
        import redis.asyncio as aioredis  # noqa: PLC0415 - the redis extra, with a bus

        base = url.split("?", 1)[0]
        client = aioredis.Redis.from_url(base)
        try:
            found = [k async for k in client.scan_iter(match=f"{prefix}:*")]
            if found:
                await client.delete(*found)
        finally:
            await client.aclose()


async def worker_kill(target: Target, options: ChaosOptions) -> ScenarioReport:  # noqa: PLR0915 - a script of processes
    """SIGKILL a worker process as it runs a step, start another: nothing lost or doubled."""
    kill = kill_fault(options, "worker")
    report = _new_report("worker-kill", target, options, kill)
    if report.skipped:
        return report
    if not (options.bus or "").startswith(("redis://", "rediss://")):
        report.skipped = (
            "worker-kill needs a Redis bus shared by separate processes: give --bus "
            f"redis://HOST:PORT/DB (got {options.bus or 'none'}; inproc:// cannot cross "
            "processes)"
        )
        return report
    bus, prefix = _bus_url(options.bus or "")
    rng = random.Random(f"{options.seed}/worker-kill")
    width = len(target.build(system_clock))
    try:
        with _workdir() as work:
            inputs = _runs(target, options, "wkill")
            batch = _Batch(
                store=options.store or f"sqlite:///{work / 'chaos.db'}",
                ledger=work / "ledger.db",
                run_ids=[r for r, _ in inputs],
            )
            spec = _spec(target, options, batch, inputs, report.overrides, 0.05) | {"bus": bus}
            async with _children(batch):
                workers: list[_Child] = []

                async def start_worker() -> _Child:
                    name = f"worker-{len(workers)}"
                    child = _Child(name, spec | {"role": "worker", "name": name}, work)
                    batch.children.append(child)
                    workers.append(child)
                    if not await child.until("ready "):
                        raise RuntimeError(f"{name} ended before it was ready")
                    return child

                for _ in range(options.workers):
                    await start_worker()
                orchestrator = _Child(
                    "orchestrator",
                    spec | {"role": "orchestrator", "owner": f"chaos-{uuid.uuid4().hex[:8]}"},
                    work,
                )
                batch.children.append(orchestrator)
                await orchestrator.until("ready ")
                for number in range(kill.times):
                    live = [w for w in workers if w.proc.poll() is None and w.killed_at is None]
                    victim = live[rng.randrange(len(live))]
                    # A seeded count of the victim's step starts: killed as it starts one.
                    # Within half of its share of what is left: workers do not take equal
                    # shares (a busy host favours one), and a count the victim never
                    # reached left the kill unmade when the batch ended first.
                    left = width * options.n - await _committed(batch.store, batch.run_ids)
                    share = left // (2 * (len(live) + 1))
                    if not await _kill_moment(
                        victim, kill, rng, "call ", share, unless=orchestrator
                    ):
                        ended = "the batch" if orchestrator.eof else "the victim"
                        report.notes.append(f"{ended} ended before kill {number + 1}")
                        break
                    unfinished = await _unfinished(batch.store, batch.run_ids)
                    if not unfinished:
                        report.notes.append(f"the batch ended before kill {number + 1}")
                        break
                    record = _Kill(victim.pid, victim.kill(), unfinished)
                    batch.kills.append(record)
                    replacement = await start_worker()
                    record.restart_at = replacement.ready_at
                await orchestrator.wait(options.process_timeout)
                for worker in workers:
                    if worker.proc.poll() is None:
                        worker.proc.send_signal(signal.SIGTERM)
                for worker in workers:
                    await worker.wait(15.0)
            await _tally(report, batch, report.workflow)
    finally:
        if prefix is not None:
            await _drop_keys(bus, prefix)
    report.figures["workers"] = options.workers
    _criteria(report, kill, "worker")
    return report
