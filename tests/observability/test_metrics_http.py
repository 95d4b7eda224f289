"""Prometheus metrics after real runs, scraped over HTTP from `start_metrics_server`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from obs_helpers import Samples, http_get, parse, run_everything, value
from prometheus_client.parser import text_string_to_metric_families

from firebreak.observability import (
    METRIC_NAMES,
    MetricsServer,
    PrometheusMetrics,
    install_metrics,
    start_metrics_server,
)
from firebreak.store import MemoryStore, RunStatus


@pytest.fixture
def metrics() -> Iterator[PrometheusMetrics]:
    installed = install_metrics()
    yield installed
    installed.close()


@pytest.fixture
def server(metrics: PrometheusMetrics) -> Iterator[MetricsServer]:
    with start_metrics_server(0, metrics=metrics) as running:
        yield running


@pytest.fixture
async def scraped(server: MetricsServer, metrics: PrometheusMetrics) -> Samples:
    async with MemoryStore() as store:
        results = await run_everything(store)
        await metrics.refresh_queues(store)  # the queue gauges come from the store
    assert results["invoice"].status == RunStatus.DEGRADED
    assert [results[f"scan-{n}"].status for n in (1, 2, 3)] == [RunStatus.FAILED] * 3
    assert results["kyc"].status == RunStatus.NEEDS_REVIEW
    status, content_type, body = await http_get(server.url)
    assert status == 200
    assert content_type.startswith("text/plain")
    return parse(body)


async def test_attempts_are_counted_per_agent_and_outcome(scraped: Samples) -> None:
    attempts = "firebreak_step_attempts_total"
    assert value(scraped, attempts, workflow="invoice", agent="extract", outcome="error") == 2
    assert value(scraped, attempts, workflow="invoice", agent="extract", outcome="ok") == 1
    assert value(scraped, attempts, workflow="invoice", agent="enrich", outcome="error") == 1
    assert value(scraped, attempts, workflow="invoice", agent="post", outcome="ok") == 1
    # The third scan never reached the agent: the open breaker refused it.
    assert value(scraped, attempts, workflow="scan", agent="ocr", outcome="error") == 2
    # A question for a person is not an error (the error-rate alert must not count it).
    assert value(scraped, attempts, workflow="kyc", agent="check", outcome="needs_human") == 1
    assert value(scraped, attempts, workflow="kyc", agent="check", outcome="error") is None


async def test_durations_form_a_histogram_per_agent(scraped: Samples) -> None:
    histogram = "firebreak_step_duration_seconds"
    assert value(scraped, f"{histogram}_count", workflow="invoice", agent="extract") == 3
    assert value(scraped, f"{histogram}_count", workflow="invoice", agent="post") == 1
    post_sum = value(scraped, f"{histogram}_sum", workflow="invoice", agent="post")
    assert post_sum is not None
    assert 0.05 <= post_sum < 2
    # post slept 50 ms: not in the 10 ms bucket, in the 250 ms one.
    bucket = f"{histogram}_bucket"
    assert value(scraped, bucket, workflow="invoice", agent="post", le="0.01") == 0
    assert value(scraped, bucket, workflow="invoice", agent="post", le="0.25") == 1
    assert value(scraped, bucket, workflow="invoice", agent="post", le="+Inf") == 1


async def test_retries_are_labelled_with_the_step_they_retry(scraped: Samples) -> None:
    retries = "firebreak_retries_total"
    labels = {"workflow": "invoice", "agent": "extract", "error_type": "ConnectionError"}
    assert value(scraped, retries, **labels) == 2
    assert sum(v for (name, _), v in scraped.items() if name == retries) == 2


async def test_the_open_breaker_and_its_rejections_are_exported(scraped: Samples) -> None:
    assert value(scraped, "firebreak_circuit_state", breaker="ocr-api") == 2
    rejected = "firebreak_calls_rejected_total"
    assert value(scraped, rejected, breaker="ocr-api", reason="open") == 1


async def test_queue_sizes_are_read_from_the_store(scraped: Samples) -> None:
    assert value(scraped, "firebreak_dlq_size", workflow="scan") == 3
    assert value(scraped, "firebreak_manual_queue_size", workflow="kyc") == 1
    assert value(scraped, "firebreak_dlq_size", workflow="invoice") is None


async def test_runs_are_counted_by_status(scraped: Samples) -> None:
    runs = "firebreak_runs_total"
    assert value(scraped, runs, workflow="invoice", status="running") == 1
    assert value(scraped, runs, workflow="invoice", status="degraded") == 1
    assert value(scraped, runs, workflow="scan", status="failed") == 3
    assert value(scraped, runs, workflow="kyc", status="needs_review") == 1


async def test_every_metric_name_is_exported(scraped: Samples) -> None:
    names = {name for name, _ in scraped}
    for metric in METRIC_NAMES:
        assert any(name == metric or name.startswith(f"{metric}_") for name in names), metric


async def test_openmetrics_is_served_when_asked_for(server: MetricsServer) -> None:
    accept = "application/openmetrics-text; version=1.0.0"
    status, content_type, body = await http_get(server.url, accept)
    assert status == 200
    assert content_type.startswith("application/openmetrics-text")
    assert body.rstrip().endswith("# EOF")
    assert list(text_string_to_metric_families(body.replace("# EOF", "")))


async def test_healthz_answers_and_other_paths_are_not_found(server: MetricsServer) -> None:
    root = server.url.removesuffix("/metrics")
    assert (await http_get(f"{root}/healthz"))[::2] == (200, "ok\n")
    with pytest.raises(Exception, match="404"):
        await http_get(f"{root}/nope")


def test_a_closed_server_frees_its_port(metrics: PrometheusMetrics) -> None:
    server = start_metrics_server(0, metrics=metrics)
    port = server.port
    server.close()
    server.close()  # idempotent
    again = start_metrics_server(port, metrics=metrics)
    try:
        assert again.port == port
    finally:
        again.close()
