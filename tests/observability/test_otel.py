"""OpenTelemetry spans per run and per step attempt, read from the SDK's in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from obs_helpers import invoice_workflow, run_everything
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import firebreak as fb
from firebreak import events
from firebreak.observability import install_tracing
from firebreak.store import MemoryStore


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing = install_tracing(provider)
    try:
        yield memory
    finally:
        tracing.close()
        provider.shutdown()


@pytest.fixture
async def spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    async with MemoryStore() as store:
        await run_everything(store)
    return list(exporter.get_finished_spans())


def attr(span: ReadableSpan, key: str) -> object:
    assert span.attributes is not None
    return span.attributes.get(key)


def run_span(spans: list[ReadableSpan], run_id: str) -> ReadableSpan:
    (found,) = [
        s
        for s in spans
        if s.name.startswith("firebreak.run") and attr(s, "firebreak.run_id") == run_id
    ]
    return found


def attempts(spans: list[ReadableSpan], run_id: str) -> list[ReadableSpan]:
    return [
        s
        for s in spans
        if s.name.startswith("firebreak.step") and attr(s, "firebreak.run_id") == run_id
    ]


async def test_a_run_is_one_span_with_a_child_per_attempt(spans: list[ReadableSpan]) -> None:
    run = run_span(spans, "inv-1")
    assert run.name == "firebreak.run invoice"
    assert attr(run, "firebreak.status") == "degraded"
    children = attempts(spans, "inv-1")
    assert [
        (s.name, attr(s, "firebreak.attempt"), attr(s, "firebreak.outcome")) for s in children
    ] == [
        ("firebreak.step extract", 1, "error"),
        ("firebreak.step extract", 2, "error"),
        ("firebreak.step extract", 3, "ok"),
        ("firebreak.step enrich", 1, "error"),
        ("firebreak.step post", 1, "ok"),
    ]
    assert run.context is not None
    for child in children:
        assert child.parent is not None
        assert child.parent.span_id == run.context.span_id
        assert child.context is not None
        assert child.context.trace_id == run.context.trace_id
        assert run.start_time is not None
        assert child.start_time is not None
        assert run.start_time <= child.start_time


async def test_attempt_spans_last_as_long_as_the_attempt(spans: list[ReadableSpan]) -> None:
    (post,) = [s for s in attempts(spans, "inv-1") if s.name == "firebreak.step post"]
    assert post.start_time is not None
    assert post.end_time is not None
    assert 0.05 <= (post.end_time - post.start_time) / 1e9 < 2


async def test_failed_attempts_and_runs_are_errors(spans: list[ReadableSpan]) -> None:
    failed = attempts(spans, "inv-1")[0]
    assert failed.status.status_code == StatusCode.ERROR
    assert attr(failed, "error.type") == "ConnectionError"
    assert attempts(spans, "inv-1")[-1].status.status_code != StatusCode.ERROR
    scan = run_span(spans, "scan-1")
    assert scan.status.status_code == StatusCode.ERROR
    assert "ocr" in (scan.status.description or "")
    assert run_span(spans, "inv-1").status.status_code == StatusCode.UNSET  # degraded
    assert run_span(spans, "kyc-1").status.status_code == StatusCode.UNSET  # needs review


async def test_retries_rejections_and_commits_are_span_events(spans: list[ReadableSpan]) -> None:
    run = run_span(spans, "inv-1")
    retries = [e for e in run.events if e.name == "RetryScheduled"]
    assert len(retries) == 2
    assert all(e.attributes and e.attributes["firebreak.agent"] == "extract" for e in retries)
    committed = [
        e.attributes["firebreak.agent"]
        for e in run.events
        if e.name == "StepStateChanged" and e.attributes
    ]
    assert committed == ["extract", "enrich", "post"]
    scan = run_span(spans, "scan-1")
    assert "QueueChanged" in [e.name for e in scan.events]


async def test_every_run_span_is_ended(spans: list[ReadableSpan]) -> None:
    runs = {attr(s, "firebreak.run_id") for s in spans if s.name.startswith("firebreak.run")}
    assert runs == {"inv-1", "scan-1", "scan-2", "scan-3", "kyc-1"}


async def test_close_ends_runs_still_open_as_incomplete() -> None:
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracing = install_tracing(provider)
    try:
        events.emit(events.RunStateChanged(source="wf", run_id="r1", status="running"))
        assert memory.get_finished_spans() == ()
    finally:
        tracing.close()
        provider.shutdown()
    (span,) = memory.get_finished_spans()
    assert attr(span, "firebreak.incomplete") is True


async def test_a_resumed_run_gets_a_new_span_marked_resumed(exporter: InMemorySpanExporter) -> None:
    wf = invoice_workflow()
    async with MemoryStore() as store:
        await fb.Engine(store).run(wf, {"amount": 1}, run_id="r")
        events.emit(
            events.RunStateChanged(source="invoice", run_id="r", status="running", resumed=True)
        )
        events.emit(events.RunStateChanged(source="invoice", run_id="r", status="succeeded"))
    runs = [s for s in exporter.get_finished_spans() if s.name.startswith("firebreak.run")]
    assert [attr(s, "firebreak.resumed") for s in runs] == [False, True]
    assert runs[1].status.status_code == StatusCode.OK
