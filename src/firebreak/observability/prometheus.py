"""Prometheus metrics as a subscriber of the event stream (``pip install firebreak[prometheus]``).

The names are the ones RESILIENCE.md fixes, so alert rules and dashboards can rely on them:

- ``firebreak_step_attempts_total{workflow,agent,outcome}``: every attempt, by outcome
- ``firebreak_step_duration_seconds{workflow,agent}``: histogram of attempt durations
- ``firebreak_retries_total{workflow,agent,error_type}``: retries scheduled
- ``firebreak_circuit_state{breaker}``: 0 closed, 1 half-open, 2 open
- ``firebreak_calls_rejected_total{breaker,reason}``: calls refused by a breaker or bulkhead
- ``firebreak_dlq_size{workflow}``: runs in the dead-letter queue (read from the store:
  `refresh_queues`, which ``firebreak serve --store`` calls every ``--poll`` seconds)
- ``firebreak_manual_queue_size{workflow}``: steps waiting for a person (likewise)
- ``firebreak_runs_total{workflow,status}``: runs entering each status

>>> from firebreak.observability import install_metrics, start_metrics_server
>>> metrics = install_metrics()            # subscribes to firebreak.events.hub
>>> server = start_metrics_server(0, metrics=metrics)   # 0: any free port
>>> server.close(); metrics.close()
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from firebreak.events import (
    BreakerStateChanged,
    CallRejected,
    Event,
    EventHub,
    QueueChanged,
    RetryScheduled,
    RunStateChanged,
    StepAttempted,
    hub,
)
from firebreak.observability._steps import StepTracker
from firebreak.resilience import BreakerRegistry, CircuitBreaker
from firebreak.store import CheckpointStore, RunStatus

__all__ = [
    "CIRCUIT_STATES",
    "DURATION_BUCKETS",
    "METRIC_NAMES",
    "PrometheusMetrics",
    "install_metrics",
]

CIRCUIT_STATES = {"closed": 0, "half_open": 1, "open": 2}
"""The value `firebreak_circuit_state` takes for each breaker state."""

DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
"""Histogram buckets in seconds: from a cache hit to a five-minute LLM call."""

METRIC_NAMES = (
    "firebreak_step_attempts_total",
    "firebreak_step_duration_seconds",
    "firebreak_retries_total",
    "firebreak_circuit_state",
    "firebreak_calls_rejected_total",
    "firebreak_dlq_size",
    "firebreak_manual_queue_size",
    "firebreak_runs_total",
)
"""Every metric family this module exports (histograms add ``_bucket``, ``_sum``, ``_count``)."""


class PrometheusMetrics:
    """Keeps the firebreak metrics in its own `CollectorRegistry`, fed by events.

    Build it with `install_metrics`; `close` unsubscribes (the values stay readable).

    Retries: `RetryScheduled` names the retry *policy*, not the step. Events are delivered
    synchronously in the emitting task, and the engine runs a step's attempts and its
    retry loop in one task; so the subscriber notes the step of each `StepAttempted` in a
    context variable (see `firebreak.observability._steps`) and labels a retry emitted
    there with that workflow and agent. A retry seen before any
    attempt of its step ended, or outside any engine step (a `Retry` used on its own),
    gets ``workflow=""`` and ``agent=<policy name>``.
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        """Where the metrics live; serve it with `start_metrics_server`."""
        reg = self.registry
        self.step_attempts = Counter(
            "firebreak_step_attempts",
            "Attempts of agents, by how they ended (ok, error, invalid, timeout, rejected).",
            ["workflow", "agent", "outcome"],
            registry=reg,
        )
        self.step_duration = Histogram(
            "firebreak_step_duration_seconds",
            "Duration of agent attempts in seconds.",
            ["workflow", "agent"],
            buckets=tuple(buckets),
            registry=reg,
        )
        self.retries = Counter(
            "firebreak_retries",
            "Retries scheduled after a failed attempt, by the error that caused them.",
            ["workflow", "agent", "error_type"],
            registry=reg,
        )
        self.circuit_state = Gauge(
            "firebreak_circuit_state",
            "Circuit breaker state: 0 closed, 1 half-open, 2 open.",
            ["breaker"],
            registry=reg,
        )
        self.calls_rejected = Counter(
            "firebreak_calls_rejected",
            "Calls refused at once by a circuit breaker (open, half_open) "
            "or a bulkhead (full, wait_timeout).",
            ["breaker", "reason"],
            registry=reg,
        )
        self.dlq_size = Gauge(
            "firebreak_dlq_size",
            "Runs in the dead-letter queue.",
            ["workflow"],
            registry=reg,
        )
        self.manual_queue_size = Gauge(
            "firebreak_manual_queue_size",
            "Steps waiting in the manual-review queue.",
            ["workflow"],
            registry=reg,
        )
        self.runs = Counter(
            "firebreak_runs",
            "Runs entering a status (running, succeeded, degraded, failed, paused, needs_review).",
            ["workflow", "status"],
            registry=reg,
        )
        self._steps = StepTracker()
        # Queue sizes by (queue, workflow): deltas move them, a store refresh resets them.
        self._queues: dict[tuple[str, str], int] = {}
        self._unsubscribe: list[Callable[[], None]] = []

    # -- subscription ---------------------------------------------------------------------

    def subscribe(self, to: EventHub = hub) -> PrometheusMetrics:
        """Start counting the events of `to` (the process-wide hub by default)."""
        self._unsubscribe.append(to.subscribe(self.handle))
        return self

    def close(self) -> None:
        """Stop counting: unsubscribe from every hub. Idempotent."""
        while self._unsubscribe:
            self._unsubscribe.pop()()

    def __enter__(self) -> PrometheusMetrics:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- events ---------------------------------------------------------------------------

    def handle(self, event: Event) -> None:
        """Update the metrics for one event (the hub calls this)."""
        self._steps.note(event)
        if isinstance(event, StepAttempted):
            workflow, agent = event.source, event.agent
            self.step_attempts.labels(workflow, agent, event.outcome).inc()
            self.step_duration.labels(workflow, agent).observe(max(event.duration, 0.0))
        elif isinstance(event, RetryScheduled):
            step = self._steps.current()
            workflow, agent = ("", event.source) if step is None else (step.workflow, step.agent)
            self.retries.labels(workflow, agent, event.error_type).inc()
        elif isinstance(event, BreakerStateChanged):
            self.circuit_state.labels(event.source).set(CIRCUIT_STATES[event.new])
        elif isinstance(event, CallRejected):
            self.calls_rejected.labels(event.source, event.reason).inc()
        elif isinstance(event, QueueChanged):
            # Not the queue gauges: a process sees only its own additions, and a value it
            # kept after another process drained the queue held `max` up, firing the
            # backlog alert for good. Those come from the store (`refresh_queues`); the
            # event only makes the workflow known to the next refresh.
            self._queues.setdefault((event.queue, event.source), 0)
        elif isinstance(event, RunStateChanged):
            self.runs.labels(event.source, event.status).inc()

    def _set_queue(self, queue: str, workflow: str, size: int) -> None:
        size = max(size, 0)
        self._queues[queue, workflow] = size
        gauge = self.dlq_size if queue == "dlq" else self.manual_queue_size
        gauge.labels(workflow).set(size)

    # -- state that events do not carry -----------------------------------------------------

    def observe_breakers(self, breakers: Iterable[CircuitBreaker]) -> None:
        """Set `firebreak_circuit_state` from breakers' current states (e.g. at start-up).

        Events only report changes; a breaker that never changed would have no series.
        Takes a `BreakerRegistry` or any iterable of `CircuitBreaker`.
        """
        for breaker in breakers:
            self.circuit_state.labels(breaker.name).set(CIRCUIT_STATES[breaker.state])

    async def refresh_queues(
        self, store: CheckpointStore, *, workflows: Iterable[str] = ()
    ) -> None:
        """Set the queue gauges from the store: the truth, whoever queued the entries.

        The only source of those gauges: events show a process its own additions, not
        what another one drained (``firebreak serve --store`` polls this). The dead-letter
        queue is counted per workflow with ``dlq_size``: for the workflows given, those
        already labelled or seen in a `QueueChanged`, those with open review items or
        recent failed runs, and any other the queue holds.
        """
        open_items = await store.review_list()
        review: dict[str, int] = {}
        for item in open_items:
            review[item.workflow] = review.get(item.workflow, 0) + 1
        known = {*workflows, *review, *(workflow for _, workflow in self._queues)}
        failed = await store.list_runs(status=RunStatus.FAILED.value, limit=1000)
        known |= {record.workflow for record in failed}
        dlq = {workflow: await store.dlq_size(workflow) for workflow in known}
        if sum(dlq.values()) < await store.dlq_size():
            # Entries of a workflow not found above (its failures older than the newest
            # thousand): read the queue once for their names. Rare, and once per name.
            for entry in await store.dlq_list():
                if entry.workflow not in dlq:
                    dlq[entry.workflow] = await store.dlq_size(entry.workflow)
        for workflow in sorted(dlq):
            self._set_queue("dlq", workflow, dlq[workflow])
            self._set_queue("review", workflow, review.get(workflow, 0))


def install_metrics(
    registry: CollectorRegistry | None = None,
    *,
    buckets: Sequence[float] = DURATION_BUCKETS,
    breakers: BreakerRegistry | None = None,
    to: EventHub = hub,
) -> PrometheusMetrics:
    """Export firebreak's metrics: subscribe a `PrometheusMetrics` to the event hub.

    Args:
        registry: where to register the metrics; default a new private `CollectorRegistry`
            (two subscribers never collide). Pass ``prometheus_client.REGISTRY`` to serve
            them with an existing exporter.
        buckets: the duration histogram's buckets, in seconds.
        breakers: breakers whose current state to export at once (e.g. ``fb.breakers``).
        to: the hub to subscribe to.

    Returns:
        The subscriber; ``close()`` unsubscribes it.

    Example:
        >>> metrics = install_metrics()
        >>> metrics.close()
    """
    metrics = PrometheusMetrics(registry, buckets=buckets)
    if breakers is not None:
        metrics.observe_breakers(breakers)
    return metrics.subscribe(to)
