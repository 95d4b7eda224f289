"""The chaos scenarios: the four standard ones, on virtual or real time, and process kills.

The four run on any `Target`; the two that kill processes (``orchestrator-kill``,
``worker-kill``) are in `firebreak.chaos.processes` (real processes on a durable store,
real seconds).

1. ``agent-timeout``: a 30 s delay in one agent: its breaker opens, later calls are
   rejected at once, runs end as configured and none hangs.
2. ``agent-outage``: an agent down for 5 minutes: runs checkpoint and pause; when it
   returns every run resumes to completion, nothing lost, nothing run twice.
3. ``saturation``: 10x the normal request rate: bulkheads shed load with `Overloaded`
   (and a metric event), in-flight runs stay bounded, admitted runs keep their latency.
4. ``corrupted-data``: invalid inputs are rejected by validation and dead-lettered with
   the reason; nothing crashes; the other runs end as they would without them.

Virtual time (the default) runs on `firebreak.testing.FakeClock` and a `MemoryStore`:
a 5-minute outage takes well under a second. ``real_time=True`` runs on the system
clock and the given store, in real seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from firebreak.chaos.faults import Fault
from firebreak.chaos.inject import AuditingExecutor, Injector, inject
from firebreak.chaos.processes import orchestrator_kill, worker_kill
from firebreak.chaos.report import ScenarioReport, percentile
from firebreak.chaos.targets import Target
from firebreak.clock import Clock, system_clock
from firebreak.engine import Engine, LocalExecutor, RunResult
from firebreak.events import BreakerStateChanged, CallRejected, Event, hub
from firebreak.resilience import BreakerRegistry
from firebreak.store import CheckpointStore, MemoryStore, RunStatus, open_store
from firebreak.testing import FakeClock, capture_events
from firebreak.workflow import Workflow

__all__ = ["PROCESS_SCENARIOS", "SCENARIOS", "STANDARD", "ChaosOptions", "run_scenario"]

_DONE: Final = frozenset(
    {
        RunStatus.SUCCEEDED,
        RunStatus.DEGRADED,
        RunStatus.FAILED,
        RunStatus.PAUSED,
        RunStatus.NEEDS_REVIEW,
    }
)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChaosOptions:
    """How a scenario runs: its size, seed, time, store and fault parameters."""

    n: int = 60
    """Runs at the normal rate (saturation sends 10x as many)."""
    seed: int = 7
    """Seed of the fault draws and of the corrupted inputs."""
    real_time: bool = False
    """Real seconds on the system clock instead of compressed virtual time."""
    store: str | None = None
    """Store URL in real time (default ``memory://``); virtual time uses a MemoryStore."""
    gap: float = 1.0
    """Seconds between run arrivals at the normal rate."""
    delay: float = 30.0
    """Injected delay of the agent-timeout scenario."""
    outage: float = 300.0
    """Length of the agent-outage scenario's outage."""
    surge: int = 10
    """Rate multiplier of the saturation scenario."""
    corrupt_share: float = 0.25
    """Share of inputs the corrupted-data scenario mangles."""
    agent: str | None = None
    """The agent to hit (default: the target's choice)."""
    faults: tuple[Fault, ...] = ()
    """Extra faults injected on top of the scenario's own."""
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    """Per agent, options set on the workflow's copy (on top of the target's)."""
    kills: int = 3
    """SIGKILLs of the process scenarios unless a ``kill`` fault in `faults` says."""
    bus: str | None = None
    """``redis://`` bus URL of the worker-kill scenario (without one it is skipped)."""
    workers: int = 3
    """Worker processes of the worker-kill scenario."""
    time_scale: float | None = None
    """Process scenarios: real seconds per simulated second of the target's services;
    default 0.01 for orchestrator-kill (a 7 s OCR call takes 70 ms) and 0.05 for worker-kill
    (a killed worker's step comes back after the bus's ~1 s visibility timeout: the run's
    deadline must outlast a few of those)."""
    process_timeout: float = 120.0
    """Process scenarios: real seconds the last orchestrator may take to finish the batch."""


@dataclass(slots=True)
class _Outcome:
    start: float
    end: float = 0.0
    result: RunResult | None = None
    crash: str | None = None


class _Harness:
    """One engine on one clock and store, with faults, an audit and a run driver."""

    def __init__(self, target: Target, options: ChaosOptions, clock: Clock, store: CheckpointStore):
        self.target = target
        self.options = options
        self.clock = clock
        self.began = clock.now()  # the system clock's zero is the boot, not the scenario
        self.store = store
        self.outcomes: dict[str, _Outcome] = {}
        self.in_flight = 0
        self.max_in_flight = 0
        self.injector: Injector | None = None
        self.workflow: Workflow | None = None
        self.engine: Engine | None = None
        self.audit: AuditingExecutor | None = None

    def setup(
        self,
        faults: list[Fault],
        overrides: Mapping[str, Mapping[str, Any]],
        *,
        input_schema: Callable[[Any], Any] | None = None,
    ) -> Workflow:
        base = self.target.build(self.clock)
        self.injector = Injector(tuple(faults), self.options.seed, self.clock, self.clock.now())
        self.workflow = inject(base, self.injector, overrides=overrides, input_schema=input_schema)
        # Seeded: a breaker's open-time jitter moves pause times, so the same seed must
        # give the same report.
        registry = BreakerRegistry(clock=self.clock, seed=self.options.seed)
        inner = LocalExecutor(self.store, registry=registry, clock=self.clock)
        self.audit = AuditingExecutor(inner, self.store)
        self.engine = Engine(
            self.store, executor=self.audit, clock=self.clock, registry=registry, lease_ttl=3600
        )
        return self.workflow

    def ready(self) -> tuple[Engine, Workflow, AuditingExecutor]:
        """The engine, workflow and audit `setup` made."""
        if self.engine is None or self.workflow is None or self.audit is None:
            raise RuntimeError("call setup() first")
        return self.engine, self.workflow, self.audit

    async def one(self, run_id: str, value: Any, at: float) -> None:
        engine, workflow, _ = self.ready()
        wait = at - self.clock.now()
        if wait > 0:
            await self.clock.sleep(wait)
        outcome = self.outcomes[run_id] = _Outcome(start=self.clock.now())
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            outcome.result = await engine.run(workflow, value, run_id=run_id)
        except Exception as exc:  # noqa: BLE001 - a crash is a finding, not the end
            outcome.crash = f"{type(exc).__name__}: {exc}"
        finally:
            self.in_flight -= 1
            outcome.end = self.clock.now()

    async def batch(self, runs: list[tuple[str, Any, float]]) -> None:
        start = self.clock.now()
        await asyncio.gather(*(self.one(run_id, v, start + at) for run_id, v, at in runs))

    async def settle_paused(self, limit: float) -> int:
        """Resume paused runs as they come due until none is paused; return the peak."""
        engine, workflow, _ = self.ready()
        peak = 0
        deadline = self.clock.now() + limit
        while self.clock.now() < deadline:
            paused = [
                r
                for r in await self.store.list_runs(status="paused", limit=100_000)
                if r.run_id in self.outcomes
            ]
            peak = max(peak, len(paused))
            if not paused:
                break
            due = min(r.resume_at or 0.0 for r in paused)
            wait = max(due - self.store.clock(), 0.0) + 0.001
            await self.clock.sleep(wait)
            for result in await engine.resume_due({workflow.name: workflow}):
                self.outcomes[result.run_id].result = result
                self.outcomes[result.run_id].end = self.clock.now()
        return peak

    async def tally(self, report: ScenarioReport) -> dict[str, RunStatus | None]:
        """Fill the outcome counts from the store (the truth), return status per run."""
        _, workflow, audit = self.ready()
        statuses: dict[str, RunStatus | None] = {}
        for run_id in self.outcomes:
            record = await self.store.get_run(run_id)
            statuses[run_id] = None if record is None else record.status
        counted = list(statuses.values())
        report.runs = len(statuses)
        report.succeeded = counted.count(RunStatus.SUCCEEDED)
        report.degraded = counted.count(RunStatus.DEGRADED)
        report.paused = counted.count(RunStatus.PAUSED)
        report.failed = counted.count(RunStatus.FAILED)
        report.needs_review = counted.count(RunStatus.NEEDS_REVIEW)
        report.lost = sum(1 for s in counted if s not in _DONE)
        entries = await self.store.dlq_list(workflow.name)
        report.dead_lettered = sum(1 for e in entries if e.run_id in statuses)
        reasons = Counter(e.reason for e in entries if e.run_id in statuses)
        if reasons:  # a report of failures that says none of why was no help
            reason, count = reasons.most_common(1)[0]
            note = f"dead-lettered most often ({count} of {report.dead_lettered}): {reason}"
            if "timed out" in reason and not self.options.real_time:
                note += (
                    " (on virtual time an agent that waits on real time, a sleep or a real "
                    "call, times out at once: pass --real-time)"
                )
            report.notes.append(note)
        report.duplicated = len(audit.duplicated)
        crashes = [o.crash for o in self.outcomes.values() if o.crash]
        report.figures["crashes"] = len(crashes)
        if crashes:
            report.notes.append(f"engine.run raised: {crashes[0]}")
        if self.injector is not None:
            report.faults = [
                f"{label} (x{count})" for label, count in self.injector.injected.items()
            ]
        return statuses

    def durations(self, run_ids: list[str] | None = None) -> list[float]:
        ids = self.outcomes if run_ids is None else run_ids
        return [self.outcomes[r].end - self.outcomes[r].start for r in ids]


@contextlib.asynccontextmanager
async def _harness(target: Target, options: ChaosOptions) -> AsyncIterator[_Harness]:
    if options.real_time:
        async with open_store(options.store or "memory://") as store:
            yield _Harness(target, options, system_clock, store)
        return
    clock = FakeClock()
    async with MemoryStore(clock=clock.wall) as store:
        yield _Harness(target, options, clock, store)


def _overrides(target: Target, scenario: str, options: ChaosOptions) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {
        k: dict(v) for k, v in target.overrides.get(scenario, {}).items()
    }
    for agent, opts in options.overrides.items():
        merged.setdefault(agent, {}).update(opts)
    return merged


def _pick(workflow: Workflow, wanted: str | None, *, last: bool) -> str:
    if wanted is not None:
        workflow[wanted]  # KeyError names the workflow
        return wanted
    with_breaker = [s.name for s in workflow if s.breaker]
    names = with_breaker or list(workflow.agents)
    return names[-1] if last else names[0]


def _arrivals(target: Target, prefix: str, n: int, gap: float) -> list[tuple[str, Any, float]]:
    return [(f"{prefix}-{i}", target.make_input(i), i * gap) for i in range(n)]


def _common(report: ScenarioReport) -> None:
    report.require("no run lost", report.lost == 0, f"lost = {report.lost}")
    report.require(
        "no side effect duplicated", report.duplicated == 0, f"duplicated = {report.duplicated}"
    )
    report.require(
        "nothing crashed",
        report.figures.get("crashes", 0) == 0,
        f"{report.figures.get('crashes', 0):g} runs raised out of engine.run",
    )


def _events(seen: list[Event], kind: type[Event]) -> list[Any]:
    return [e for e in seen if isinstance(e, kind)]


async def agent_timeout(target: Target, options: ChaosOptions) -> ScenarioReport:
    """A 30 s delay in one agent: breaker opens, later calls rejected at once, none hangs."""
    async with _harness(target, options) as h:
        probe = target.build(h.clock)
        agent = _pick(probe, options.agent or target.timeout_agent, last=False)
        spec = probe[agent]
        fault = Fault(kind="latency", agent=agent, delay=options.delay)
        overrides = _overrides(target, "agent-timeout", options)
        wf = h.setup([fault, *options.faults], overrides)
        report = ScenarioReport(
            scenario="agent-timeout",
            workflow=wf.name,
            overrides=overrides,
            time="real" if options.real_time else "virtual",
        )
        stamped: list[tuple[float, Event]] = []
        stop = hub.subscribe(lambda event: stamped.append((h.clock.now(), event)))
        try:
            await h.batch(_arrivals(target, "timeout", options.n, options.gap))
        finally:
            stop()
        await h.tally(report)
    # Only the delayed agent's breaker: another agent's tripping proves nothing here.
    stamped = [(at, e) for at, e in stamped if getattr(e, "source", None) == spec.breaker]
    seen = [event for _, event in stamped]
    opened = [e for e in _events(seen, BreakerStateChanged) if e.new == "open"]
    rejected = [e for e in _events(seen, CallRejected) if e.kind == "breaker"]
    report.figures["breaker_trips"] = len(opened)
    report.figures["calls_rejected"] = len(rejected)
    durations = h.durations()
    report.figures["p50_run"] = percentile(durations, 50)
    report.figures["max_run"] = max(durations, default=0.0)
    if spec.breaker is None:
        report.notes.append(f"agent {agent!r} has no breaker: every call waits out its timeout")
    report.require(
        f"breaker of {agent} opens",
        bool(opened),
        f"{len(opened)} trips of {spec.breaker}"
        if spec.breaker is not None
        else f"agent {agent!r} has no breaker (breaker=SERVICE): nothing can trip",
    )
    delayed = sum(1 for _, hit in h.injector.hits if hit == agent) if h.injector else 0
    report.require(
        f"the delay reached {agent}",
        delayed > 0,
        f"{delayed} calls of {agent} were delayed {options.delay:g}s",
    )
    # Runs started after the breaker first opened: their calls are refused at once.
    first_open = min(
        (at for at, e in stamped if isinstance(e, BreakerStateChanged) and e.new == "open"),
        default=float("inf"),
    )
    probes = sum(1 for e in _events(seen, BreakerStateChanged) if e.new == "half_open")
    assert h.injector is not None  # noqa: S101 - set up
    slow_after = sum(1 for at, a in h.injector.hits if a == agent and at > first_open)
    report.figures["probes"] = probes
    report.figures["slow_calls_after_open"] = slow_after
    report.require(
        "later calls rejected at once",
        bool(rejected) and slow_after <= probes,
        f"after the first trip {len(rejected)} calls were rejected at once and {slow_after} "
        f"waited out the {options.delay:g}s delay (half-open probes: {probes})",
    )
    bound = wf.deadline if wf.deadline is not None else 10 * spec.timeout * len(wf)
    unfinished = report.runs - (
        report.succeeded + report.degraded + report.failed + report.paused + report.needs_review
    )
    report.require(
        "no run hangs",
        unfinished == 0 and report.figures["max_run"] <= bound,
        f"longest run {report.figures['max_run']:.1f}s (bound {bound:g}s); unfinished {unfinished}",
    )
    report.require(
        "failed runs are dead-lettered",
        report.dead_lettered == report.failed,
        f"failed {report.failed}, dead-lettered {report.dead_lettered}",
    )
    _common(report)
    return report


async def agent_outage(target: Target, options: ChaosOptions) -> ScenarioReport:
    """An agent down for 5 minutes: runs pause; afterwards every run resumes to the end."""
    async with _harness(target, options) as h:
        probe = target.build(h.clock)
        agent = _pick(probe, options.agent or target.outage_agent, last=True)
        overrides = _overrides(target, "agent-outage", options)
        fault = Fault(kind="outage", agent=agent, start=0.0, duration=options.outage)
        wf = h.setup([fault, *options.faults], overrides)
        report = ScenarioReport(
            scenario="agent-outage",
            workflow=wf.name,
            overrides=overrides,
            time="real" if options.real_time else "virtual",
        )
        pauses = wf[agent].on_exhausted == "pause"
        if not pauses:
            report.notes.append(
                f"agent {agent!r} has on_exhausted={wf[agent].on_exhausted!r}: an outage fails "
                "its runs instead of pausing them; set on_exhausted='pause'"
            )
        await h.batch(_arrivals(target, "outage", options.n, options.gap))
        first = await h.store.list_runs(status="paused", limit=100_000)
        peak = await h.settle_paused(limit=options.outage + 3600.0)
        peak = max(peak, sum(1 for r in first if r.run_id in h.outcomes))
        statuses = await h.tally(report)
        executions = dict(h.audit.executions) if h.audit else {}
    report.figures["peak_paused"] = peak
    report.figures["outage_s"] = options.outage
    ends = [o.end - h.began for o in h.outcomes.values()]
    report.figures["sim_s"] = max(ends, default=0.0)
    report.require("runs pause during the outage", peak > 0 and pauses, f"peak paused {peak}")
    done = sum(1 for s in statuses.values() if s in (RunStatus.SUCCEEDED, RunStatus.DEGRADED))
    report.require(
        "every run resumes to completion",
        done == report.runs,
        f"{done} of {report.runs} completed; paused {report.paused}, failed {report.failed}",
    )
    upstream = set(wf.agents) - {agent, *wf.dependents(agent)}
    repeats = sum(1 for (_, a), count in executions.items() if a in upstream and count > 1)
    report.figures["upstream_repeats"] = repeats
    report.require(
        "checkpointed steps never run again",
        repeats == 0,
        f"{repeats} steps before {agent} ran more than once",
    )
    _common(report)
    return report


async def _latency_phase(
    target: Target, options: ChaosOptions, n: int, gap: float, tag: str
) -> tuple[_Harness, ScenarioReport, list[Event]]:
    async with _harness(target, options) as h:
        probe = target.build(h.clock)
        overrides = _overrides(target, "saturation", options)
        faults = [
            Fault(
                kind="contention",
                agent=spec.name,
                delay=1.0,
                capacity=int(overrides.get(spec.name, {}).get("bulkhead") or spec.bulkhead or 10),
            )
            for spec in probe
        ]
        wf = h.setup([*faults, *options.faults], overrides)
        report = ScenarioReport(
            scenario="saturation",
            workflow=wf.name,
            overrides=overrides,
            time="real" if options.real_time else "virtual",
        )
        with capture_events() as seen:
            await h.batch(_arrivals(target, tag, n, gap))
        await h.tally(report)
    return h, report, seen


def _is_overloaded(outcome: _Outcome) -> bool:
    result = outcome.result
    if result is None or result.status != RunStatus.FAILED or result.error is None:
        return False
    return "Overloaded" in f"{result.error.get('type', '')} {result.error.get('message', '')}"


async def saturation(target: Target, options: ChaosOptions) -> ScenarioReport:
    """10x the normal rate: bulkheads shed with `Overloaded`, admitted runs keep latency."""
    normal, _, _ = await _latency_phase(target, options, options.n, options.gap, "normal")
    surge_n = options.n * options.surge
    h, report, seen = await _latency_phase(
        target, options, surge_n, options.gap / options.surge, "surge"
    )
    assert h.workflow is not None  # noqa: S101 - set up
    wf = h.workflow
    base = normal.durations()
    admitted = [
        r
        for r, o in h.outcomes.items()
        if o.result is not None and o.result.status in (RunStatus.SUCCEEDED, RunStatus.DEGRADED)
    ]
    shed = [r for r, o in h.outcomes.items() if _is_overloaded(o)]
    report.shed = len(shed)
    rejected = [e for e in _events(seen, CallRejected) if e.kind == "bulkhead"]
    lat = h.durations(admitted)
    report.figures.update(
        {
            "p50_normal": percentile(base, 50),
            "p99_normal": percentile(base, 99),
            "p50_admitted": percentile(lat, 50),
            "p99_admitted": percentile(lat, 99),
            "admitted": len(admitted),
            "rejected_metric": len(rejected),
            "max_in_flight": h.max_in_flight,
            "normal_max_in_flight": normal.max_in_flight,
        }
    )
    limits = {s.name: s.bulkhead for s in wf if s.bulkhead}
    if not limits:
        report.notes.append(
            "no agent has a bulkhead: under a surge every run is admitted and queues on the "
            "services; give agents bulkhead=N"
        )
    report.require("agents have bulkheads", bool(limits), f"{limits or 'none'}")
    report.require(
        "load is shed with Overloaded, and counted",
        bool(shed) and len(rejected) >= len(shed),
        f"{len(shed)} runs refused with Overloaded; {len(rejected)} CallRejected(bulkhead) events",
    )
    capacity = sum(limits.values()) if limits else 0
    per_second = options.surge / options.gap
    bound = capacity + per_second
    report.require(
        "in-flight runs stay bounded",
        bool(limits) and h.max_in_flight <= bound,
        f"peak {h.max_in_flight} runs in flight (bound: bulkheads {capacity} + one second of "
        f"arrivals {per_second:g})",
    )
    p99n, p99a = report.figures["p99_normal"], report.figures["p99_admitted"]
    report.require(
        "admitted runs keep their latency",
        bool(admitted) and p99a <= 1.5 * p99n + 1.0,
        f"P99 {p99a:.1f}s at {options.surge}x vs {p99n:.1f}s at the normal rate "
        f"(P50 {report.figures['p50_admitted']:.1f}s vs {report.figures['p50_normal']:.1f}s)",
    )
    if shed:
        report.notes.append(
            f"shed inside the runs, by the bulkheads: each of the {len(shed)} shed runs still "
            "wrote a run record and a dead-letter entry, so the store grows with the surge. "
            "Engine(max_in_flight=N) refuses a run beyond N with Overloaded before it writes "
            "anything (not set in this scenario, which measures the bulkheads)"
        )
    _common(report)
    return report


async def corrupted_data(target: Target, options: ChaosOptions) -> ScenarioReport:
    """Invalid inputs are rejected by validation and dead-lettered; other runs unaffected."""
    rng = random.Random(f"{options.seed}/corrupt")
    inputs = [(f"data-{i}", target.make_input(i)) for i in range(options.n)]
    bad = {run_id for run_id, _ in inputs if rng.random() < options.corrupt_share}
    if inputs and not bad:
        bad.add(inputs[0][0])
    mixed = [
        (run_id, target.corrupt(value, rng) if run_id in bad else value, i * options.gap)
        for i, (run_id, value) in enumerate(inputs)
    ]
    overrides = _overrides(target, "corrupted-data", options)
    async with _harness(target, options) as clean:
        clean.setup(list(options.faults), overrides, input_schema=target.input_schema)
        await clean.batch([m for m in mixed if m[0] not in bad])
        baseline = {r: o.result.status if o.result else None for r, o in clean.outcomes.items()}
    async with _harness(target, options) as h:
        wf = h.setup(list(options.faults), overrides, input_schema=target.input_schema)
        report = ScenarioReport(
            scenario="corrupted-data",
            workflow=wf.name,
            overrides=overrides,
            time="real" if options.real_time else "virtual",
        )
        if target.input_schema is not None and h.target.build(h.clock).input_schema is None:
            report.notes.append(
                "the workflow declares no input schema: the scenario used the target's "
                "(declare Workflow(..., input=schema) so bad inputs never reach an agent)"
            )
        await h.batch(mixed)
        statuses = await h.tally(report)
        entries = {e.run_id: e for e in await h.store.dlq_list(wf.name)}
    report.figures["corrupted"] = len(bad)
    rejected = [
        r
        for r in bad
        if statuses[r] == RunStatus.FAILED
        and r in entries
        and entries[r].reason
        and "InvalidInput" in str((entries[r].error or {}).get("type", ""))
    ]
    report.figures["rejected_by_validation"] = len(rejected)
    report.require(
        "corrupted inputs rejected by validation and dead-lettered with the reason",
        len(rejected) == len(bad),
        f"{len(rejected)} of {len(bad)} corrupted runs failed with InvalidInput into the DLQ",
    )
    changed = [r for r, s in baseline.items() if statuses.get(r) != s]
    report.require(
        "other runs unaffected",
        not changed,
        f"{len(baseline) - len(changed)} of {len(baseline)} clean runs ended as without the "
        "corrupted ones",
    )
    if rejected:
        report.notes.append(f"example reason: {entries[sorted(rejected)[0]].reason}")
    _common(report)
    return report


STANDARD: Final = ("agent-timeout", "agent-outage", "saturation", "corrupted-data")
"""The four in-process scenarios (``--scenario all``)."""

PROCESS_SCENARIOS: Final = ("orchestrator-kill", "worker-kill")
"""The scenarios that kill real processes (`firebreak.chaos.processes`); real time."""

SCENARIOS: dict[str, Callable[[Target, ChaosOptions], Awaitable[ScenarioReport]]] = {
    "agent-timeout": agent_timeout,
    "agent-outage": agent_outage,
    "saturation": saturation,
    "corrupted-data": corrupted_data,
    "orchestrator-kill": orchestrator_kill,
    "worker-kill": worker_kill,
}
"""Every scenario by name: the `STANDARD` four and the `PROCESS_SCENARIOS`."""


async def run_scenario(
    name: str, target: Target, options: ChaosOptions | None = None
) -> ScenarioReport:
    """Run the standard scenario `name` on `target`; see the module docstring.

    Example:
        >>> report = await run_scenario("agent-outage", invoices(), ChaosOptions(n=10))
        >>> report.passed, report.lost, report.duplicated
        (True, 0, 0)
    """
    if name not in SCENARIOS:
        raise KeyError(f"no chaos scenario {name!r}; known: {', '.join(SCENARIOS)}")
    options = options or ChaosOptions()
    wall = time.perf_counter()
    report = await SCENARIOS[name](target, options)
    if name not in PROCESS_SCENARIOS and any(f.kind == "kill" for f in options.faults):
        report.notes.append(
            "kill faults act only in the process scenarios (orchestrator-kill, worker-kill)"
        )
    report.figures["wall_s"] = round(time.perf_counter() - wall, 3)
    return report
