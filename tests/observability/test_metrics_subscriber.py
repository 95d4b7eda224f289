"""The Prometheus subscriber on its own: registries, unsubscribing, labels, the store."""

from __future__ import annotations

import pytest
from obs_helpers import breaker_registry, kyc_workflow, scan_workflow
from prometheus_client import CollectorRegistry, generate_latest

import firebreak as fb
from firebreak import events
from firebreak.observability import PrometheusMetrics, install_metrics
from firebreak.store import MemoryStore


def sample(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_each_subscriber_has_its_own_registry() -> None:
    first, second = install_metrics(), install_metrics()
    try:
        assert first.registry is not second.registry
        events.emit(events.RunStateChanged(source="wf", run_id="r", status="running"))
        assert sample(first, "firebreak_runs_total", workflow="wf", status="running") == 1
        assert sample(second, "firebreak_runs_total", workflow="wf", status="running") == 1
    finally:
        first.close()
        second.close()


def test_a_given_registry_is_used() -> None:
    registry = CollectorRegistry()
    metrics = install_metrics(registry)
    try:
        assert metrics.registry is registry
        assert b"firebreak_circuit_state" in generate_latest(registry)
    finally:
        metrics.close()


def test_close_unsubscribes_and_keeps_the_values() -> None:
    metrics = install_metrics()
    events.emit(events.RunStateChanged(source="wf", run_id="r", status="failed"))
    metrics.close()
    metrics.close()  # idempotent
    events.emit(events.RunStateChanged(source="wf", run_id="r", status="failed"))
    assert sample(metrics, "firebreak_runs_total", workflow="wf", status="failed") == 1


def test_a_retry_outside_any_step_is_labelled_with_its_policy() -> None:
    """A `Retry` used on its own has no workflow: the policy's name stands for the agent."""
    with install_metrics() as metrics:
        events.emit(
            events.RetryScheduled(source="llm", attempt=1, delay=0.1, error_type="TimeoutError")
        )
    labels = {"workflow": "", "agent": "llm", "error_type": "TimeoutError"}
    assert sample(metrics, "firebreak_retries_total", **labels) == 1


async def test_a_retry_after_a_settled_step_is_not_blamed_on_it() -> None:
    """In the orchestrator's task, a committed step stops labelling what follows."""
    with install_metrics() as metrics:
        events.emit(
            events.StepAttempted(
                source="wf", run_id="r", agent="a", attempt=1, outcome="error", duration=0.1
            )
        )
        events.emit(events.StepStateChanged(source="wf", run_id="r", agent="a", status="failed"))
        events.emit(events.RetryScheduled(source="p", attempt=1, delay=0, error_type="E"))
    assert sample(metrics, "firebreak_retries_total", workflow="", agent="p", error_type="E") == 1
    assert (
        sample(metrics, "firebreak_retries_total", workflow="wf", agent="a", error_type="E") is None
    )


@pytest.mark.parametrize(("state", "number"), [("closed", 0), ("half_open", 1), ("open", 2)])
def test_circuit_state_is_a_number(state: events.BreakerStateName, number: int) -> None:
    with install_metrics() as metrics:
        other: events.BreakerStateName = "open" if state != "open" else "closed"
        events.emit(events.BreakerStateChanged(source="b", old=other, new=state, reason="test"))
    assert sample(metrics, "firebreak_circuit_state", breaker="b") == number


def test_bulkhead_rejections_are_counted_under_the_bulkhead_name() -> None:
    with install_metrics() as metrics:
        events.emit(events.CallRejected(source="wf/agent", kind="bulkhead", reason="full"))
    assert sample(metrics, "firebreak_calls_rejected_total", breaker="wf/agent", reason="full") == 1


def test_queue_events_alone_set_no_queue_gauge() -> None:
    """A process sees only its own additions: a count of them stayed up after another
    process drained the queue, and held the `max` of the backlog alert up for good."""
    with install_metrics() as metrics:
        events.emit(events.QueueChanged(source="wf", queue="dlq", run_id="r", delta=1))
        events.emit(events.QueueChanged(source="wf", queue="review", run_id="r", delta=1))
    assert sample(metrics, "firebreak_dlq_size", workflow="wf") is None
    assert sample(metrics, "firebreak_manual_queue_size", workflow="wf") is None


def test_breakers_that_never_changed_are_exported_from_a_registry() -> None:
    registry = fb.BreakerRegistry()
    registry.get("erp")
    with install_metrics(breakers=registry) as metrics:
        pass
    assert sample(metrics, "firebreak_circuit_state", breaker="erp") == 0


async def test_queue_sizes_are_refreshed_from_the_store() -> None:
    """What another process queued is only in the store: a refresh reads it."""
    async with MemoryStore() as store:
        engine = fb.Engine(store, registry=breaker_registry())
        await engine.run(scan_workflow(), 1, run_id="scan-1")
        await engine.run(scan_workflow(), 2, run_id="scan-2")
        await engine.run(kyc_workflow(), "ada", run_id="kyc-1")
        with install_metrics() as metrics:  # subscribed after the runs: saw nothing
            assert sample(metrics, "firebreak_dlq_size", workflow="scan") is None
            await metrics.refresh_queues(store, workflows=["invoice"])
            assert sample(metrics, "firebreak_dlq_size", workflow="scan") == 2
            assert sample(metrics, "firebreak_dlq_size", workflow="invoice") == 0
            assert sample(metrics, "firebreak_manual_queue_size", workflow="kyc") == 1
            # Drained by someone else: the next refresh says so; events change nothing.
            entry = (await store.dlq_list("scan"))[0]
            await store.dlq_drop(entry.id)
            events.emit(events.QueueChanged(source="scan", queue="dlq", run_id="x", delta=1))
            assert sample(metrics, "firebreak_dlq_size", workflow="scan") == 2
            await metrics.refresh_queues(store)
            assert sample(metrics, "firebreak_dlq_size", workflow="scan") == 1


async def test_dead_letters_of_any_workflow_are_counted() -> None:
    """Workflows were found among the newest failed runs only: a queue whose runs were
    older (or gone) had no gauge, and its backlog alert never fired."""
    async with MemoryStore() as store:
        await store.dlq_put(run_id="old-1", workflow="ledger", reason="failed")
        await fb.Engine(store, registry=breaker_registry()).run(scan_workflow(), 1, run_id="s")
        with install_metrics() as metrics:
            await metrics.refresh_queues(store)
            assert sample(metrics, "firebreak_dlq_size", workflow="ledger") == 1
            assert sample(metrics, "firebreak_dlq_size", workflow="scan") == 1


def test_events_of_another_hub_are_counted_when_subscribed_to_it() -> None:
    private = events.EventHub()
    with install_metrics(to=private) as metrics:
        private.emit(events.RunStateChanged(source="wf", run_id="r", status="paused"))
        events.emit(events.RunStateChanged(source="wf", run_id="r", status="paused"))
    assert sample(metrics, "firebreak_runs_total", workflow="wf", status="paused") == 1
