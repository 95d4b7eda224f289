"""``firebreak demo invoices``: a batch of invoices, processed naively and with firebreak.

Both runs process the same seeded invoices against the same seeded faults (see
`firebreak.demos.invoice_agents`): the fault of a call depends only on the seed, the
invoice, the agent and the attempt number. Every invoice is accounted for — succeeded,
degraded, routed to review, dead-lettered or paused — and the report checks the sum.

Time is virtual by default: services "take" seconds that cost nothing real, the virtual
clock stands still while the checkpoint store works (so durations are the simulated
service time alone, and outcomes cannot depend on how fast the disk is), and the report
gives simulated seconds. ``time_scale > 0`` runs on real time instead, one simulated
second lasting `time_scale` real seconds; durations then include the engine's and the
store's real overhead, scaled up by ``1 / time_scale``.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import shlex
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from rich.console import Console
from rich.table import Table

import firebreak as fb
from firebreak.clock import Cancellable
from firebreak.demos.invoice_agents import InvoiceWorld, build_workflow
from firebreak.events import BreakerStateChanged, FallbackUsed, RetryScheduled
from firebreak.testing import FakeClock, capture_events

__all__ = ["BatchReport", "main", "run_batch", "run_demo"]

CONCURRENCY = 50
"""Invoices in flight at once."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchReport:
    """What one run of the batch did."""

    label: str
    """``naive`` or ``firebreak``."""
    n: int
    """Invoices in the batch."""
    statuses: dict[str, list[str]]
    """Invoice ids by final run status (succeeded, degraded, needs_review, failed, paused)."""
    durations: dict[str, float]
    """Simulated seconds from start to end (or to parking in a queue), by invoice id."""
    dlq: int
    """Entries in the store's dead-letter queue for this batch."""
    review: int
    """Items in the store's review queue for this batch."""
    open_entries_of_failed: int
    """Ledger entries posted by runs that then failed and were never reversed."""
    reversed_entries: int
    """Ledger entries reversed by saga compensation."""
    retries: int
    """Retries scheduled."""
    fallbacks: int
    """Fallbacks used (enhanced OCR, tolerant PO matching)."""
    breaker_trips: int
    """Times a circuit breaker opened."""
    makespan: float
    """Simulated seconds from the first invoice's start to the last one's end."""
    wall: float
    """Real seconds the batch took."""
    by_reason: dict[str, int] = field(default_factory=dict)
    """Failed runs by the error that failed them."""

    def count(self, status: str) -> int:
        """Runs that ended with `status`."""
        return len(self.statuses.get(status, []))

    @property
    def ok(self) -> int:
        """Invoices fully processed: succeeded, or degraded (posted, PO unmatched)."""
        return self.count("succeeded") + self.count("degraded")

    @property
    def accounted(self) -> int:
        """Succeeded + degraded + review + dead-lettered + paused: must equal `n`."""
        return self.ok + self.count("needs_review") + self.count("failed") + self.count("paused")

    @property
    def mean_seconds(self) -> float:
        """Mean simulated processing time per invoice."""
        return sum(self.durations.values()) / max(len(self.durations), 1)


class VirtualClock(FakeClock):
    """Virtual time that jumps to the next timer when nothing else can run.

    A `FakeClock` whose time stands still while the checkpoint store works (`hold` and
    `release` bracket each store call): a thread writing SQLite leaves the event loop idle,
    and jumping then would charge disk latency to whatever runs next.
    """


class ScaledClock:
    """Real time, one simulated second lasting `scale` real seconds."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._start = time.monotonic()

    def now(self) -> float:
        """Simulated seconds since the clock was made."""
        return (time.monotonic() - self._start) / self.scale

    def wall(self) -> float:
        """Simulated epoch seconds."""
        return time.time() + self.now()

    async def sleep(self, seconds: float) -> None:
        """Sleep `seconds` simulated seconds."""
        await asyncio.sleep(max(seconds, 0.0) * self.scale)

    def call_at(self, when: float, callback: Callable[[], object]) -> Cancellable:
        """Run `callback` at simulated time `when`."""
        loop = asyncio.get_running_loop()
        delay = max(when - self.now(), 0.0) * self.scale
        return loop.call_later(delay, callback)

    def hold(self) -> None:
        """Real time does not stop."""

    def release(self) -> None:
        """Real time does not stop."""

    async def aclose(self) -> None:
        """Nothing to stop."""


class _TimedStore:
    """A store whose every call holds the virtual clock (see `VirtualClock`)."""

    def __init__(self, store: fb.CheckpointStore, clock: VirtualClock | ScaledClock) -> None:
        self._store = store
        self._clock = clock
        self._wrapped: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Any:
        wrapped = self._wrapped.get(name)
        if wrapped is not None:
            return wrapped
        attr = getattr(self._store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr
        clock = self._clock

        async def held(*args: Any, **kwargs: Any) -> Any:
            clock.hold()
            try:
                return await attr(*args, **kwargs)
            finally:
                clock.release()

        self._wrapped[name] = held
        return held


async def run_batch(
    label: str,
    *,
    n: int,
    seed: int,
    store: fb.CheckpointStore,
    protected: bool,
    time_scale: float = 0.0,
    batch_id: str | None = None,
) -> BatchReport:
    """Process invoices ``0 .. n-1`` of seed `seed` once, ``CONCURRENCY`` at a time.

    Args:
        label: the report's name for this run.
        n: how many invoices.
        seed: the seed of the invoices and their faults.
        store: a set-up checkpoint store (its runs get fresh ids: ``batch/label/invoice``).
        protected: with firebreak's patterns, or naive.
        time_scale: 0 for virtual time, else real seconds per simulated second.
        batch_id: prefix of the run ids (default: random), so repeated demos never collide.
    """
    clock: VirtualClock | ScaledClock = ScaledClock(time_scale) if time_scale else VirtualClock()
    world = InvoiceWorld(seed, clock=clock)
    workflow = build_workflow(world, protected=protected)
    engine = fb.Engine(
        cast("fb.CheckpointStore", _TimedStore(store, clock)),
        clock=clock,
        registry=fb.BreakerRegistry(clock=clock),
    )
    prefix = f"{batch_id or uuid.uuid4().hex[:8]}/{label}"
    statuses: dict[str, list[str]] = {}
    durations: dict[str, float] = {}
    reasons: Counter[str] = Counter()
    failed_entries: set[str] = set()
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        invoice = world.invoice(index)
        async with gate:
            start = clock.now()
            result = await engine.run(workflow, invoice, run_id=f"{prefix}/{invoice['id']}")
            durations[invoice["id"]] = clock.now() - start
        statuses.setdefault(result.status.value, []).append(invoice["id"])
        if result.status == fb.RunStatus.FAILED:
            error = result.error or {}
            reasons[str(error.get("type", "?")).rsplit(".", 1)[-1]] += 1
            entry = result.outputs.get("post_entry")
            if entry is not None:
                failed_entries.add(entry["entry_id"])

    wall = time.perf_counter()
    start = clock.now()
    try:
        with capture_events() as seen:
            await asyncio.gather(*(one(i) for i in range(n)))
    finally:
        makespan = clock.now() - start
        await clock.aclose()
    wall = time.perf_counter() - wall
    mine = f"{prefix}/"
    dlq = sum(e.run_id.startswith(mine) for e in await store.dlq_list(workflow.name))
    review = sum(i.run_id.startswith(mine) for i in await store.review_list())
    return BatchReport(
        label=label,
        n=n,
        statuses={k: sorted(v) for k, v in statuses.items()},
        durations=durations,
        dlq=dlq,
        review=review,
        open_entries_of_failed=len(failed_entries & world.ledger.open_entries()),
        reversed_entries=len(world.ledger.reversed),
        retries=sum(isinstance(e, RetryScheduled) for e in seen),
        fallbacks=sum(isinstance(e, FallbackUsed) for e in seen),
        breaker_trips=sum(isinstance(e, BreakerStateChanged) and e.new == "open" for e in seen),
        makespan=makespan,
        wall=wall,
        by_reason=dict(reasons.most_common()),
    )


async def run_demo(
    *, n: int = 1000, seed: int = 7, time_scale: float = 0.0, store: str | None = None
) -> tuple[BatchReport, BatchReport]:
    """Run the batch naively, then with firebreak, on one store; return both reports."""
    batch_id = uuid.uuid4().hex[:8]
    async with fb.open_store(store) as opened:
        naive = await run_batch(
            "naive",
            n=n,
            seed=seed,
            store=opened,
            protected=False,
            time_scale=time_scale,
            batch_id=batch_id,
        )
        safe = await run_batch(
            "firebreak",
            n=n,
            seed=seed,
            store=opened,
            protected=True,
            time_scale=time_scale,
            batch_id=batch_id,
        )
    return naive, safe


def _pct(part: int, whole: int) -> str:
    return f"{part} ({part / whole:.1%})" if whole else str(part)


def _change(new: float, old: float) -> str:
    return f"{(new - old) / old:+.0%}" if old else ""


def report_table(naive: BatchReport, safe: BatchReport, *, seed: int) -> Table:
    """The side-by-side table ``main`` prints."""
    n = naive.n
    table = Table(
        title=f"{n} invoices, seed {seed}: the same invoices and the same faults, twice",
        caption="sim s: simulated seconds. Success = succeeded + degraded (posted with the "
        "PO left unmatched and flagged). Review and dead-letter queues hold the rest: "
        "nothing is lost.",
    )
    table.add_column("")
    table.add_column("naive", justify="right")
    table.add_column("firebreak", justify="right")
    table.add_column("change", justify="right")

    def row(name: str, a: str, b: str, change: str = "") -> None:
        table.add_row(name, a, b, change)

    row("end-to-end success", _pct(naive.ok, n), _pct(safe.ok, n), _change(safe.ok, naive.ok))
    for label, status in (("  succeeded", "succeeded"), ("  degraded (PO unmatched)", "degraded")):
        row(label, str(naive.count(status)), str(safe.count(status)))
    row(
        "routed to review",
        _pct(naive.count("needs_review"), n),
        _pct(safe.count("needs_review"), n),
    )
    row("dead-lettered", _pct(naive.count("failed"), n), _pct(safe.count("failed"), n))
    row("paused", str(naive.count("paused")), str(safe.count("paused")))
    row(
        "accounted for (= n)",
        f"{naive.accounted} {'✓' if naive.accounted == n else '✗'}",
        f"{safe.accounted} {'✓' if safe.accounted == n else '✗'}",
    )
    row("invoices processed", str(naive.ok), str(safe.ok), _change(safe.ok, naive.ok))
    row(
        "mean processing time (sim s)",
        f"{naive.mean_seconds:.1f}",
        f"{safe.mean_seconds:.1f}",
        _change(safe.mean_seconds, naive.mean_seconds),
    )
    per_hour_naive = naive.ok / naive.makespan * 3600 if naive.makespan else 0.0
    per_hour_safe = safe.ok / safe.makespan * 3600 if safe.makespan else 0.0
    row(
        f"processed per sim hour ({CONCURRENCY} in flight)",
        f"{per_hour_naive:.0f}",
        f"{per_hour_safe:.0f}",
        _change(per_hour_safe, per_hour_naive),
    )
    row(
        "entries left posted by failed runs",
        str(naive.open_entries_of_failed),
        str(safe.open_entries_of_failed),
    )
    row("entries reversed (saga)", str(naive.reversed_entries), str(safe.reversed_entries))
    row(
        "retries / fallbacks",
        f"{naive.retries} / {naive.fallbacks}",
        f"{safe.retries} / {safe.fallbacks}",
    )
    row("breaker trips", str(naive.breaker_trips), str(safe.breaker_trips))
    row("wall time (s)", f"{naive.wall:.1f}", f"{safe.wall:.1f}")
    return table


def _identity(report: BatchReport) -> str:
    c = report.count
    ok = "✓" if report.accounted == report.n else "✗ MISMATCH"
    return (
        f"{report.label}: succeeded {c('succeeded')} + degraded {c('degraded')} + review "
        f"{c('needs_review')} + dead-lettered {c('failed')} + paused {c('paused')} = "
        f"{report.accounted} (n = {report.n}) {ok}; store: DLQ {report.dlq}, review "
        f"{report.review}"
    )


def main(
    *, n: int = 1000, seed: int = 7, time_scale: float = 0.0, store: str | None = None
) -> None:
    """Run the invoice batch naively and with firebreak, and print the comparison.

    Args:
        n: invoices in the batch.
        seed: the seed of the invoices and of every fault.
        time_scale: 0 (default) for virtual time; else real seconds per simulated second
            (e.g. 0.001: a 20 s OCR timeout lasts 20 ms).
        store: a store URL; ``None`` for the default (``$FIREBREAK_STORE``, else SQLite
            under ``./.firebreak/``).
    """
    console = Console()
    naive, safe = asyncio.run(run_demo(n=n, seed=seed, time_scale=time_scale, store=store))
    console.print(report_table(naive, safe, seed=seed))
    for report in (naive, safe):
        console.print(_identity(report))
        if report.by_reason:
            reasons = ", ".join(f"{k} {v}" for k, v in report.by_reason.items())
            console.print(f"  dead-lettered because: {reasons}")
    where = store or os.environ.get("FIREBREAK_STORE") or fb.store.DEFAULT_STORE_URL
    flag = f" --store {shlex.quote(store)}" if store else ""
    console.print(
        f"\nThe {2 * n} runs are in {where} (each demo adds its own): see them with "
        f"firebreak runs{flag}, firebreak dlq list{flag} and firebreak review list{flag}; "
        f"one with firebreak show RUN_ID{flag}.",
        highlight=False,
        markup=False,
    )
