"""OpenTelemetry spans from the event stream (``pip install firebreak[otel]``).

One span per run drive (``firebreak.run <workflow>``, from ``running`` until the run
succeeds, degrades, fails, pauses or waits for review) and, as its children, one span
per step attempt (``firebreak.step <agent>``) timed by the attempt's measured duration.
Retries, rejections, fallbacks and step commits become span events on the run span.

>>> from firebreak.observability import install_tracing
>>> tracing = install_tracing()      # the global tracer provider, or pass your own
>>> tracing.close()
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, TracerProvider

from firebreak._version import __version__
from firebreak.events import (
    Event,
    EventHub,
    QueueChanged,
    RunStateChanged,
    StepAttempted,
    StepStateChanged,
    hub,
)
from firebreak.observability._steps import StepTracker

__all__ = ["OtelTracing", "install_tracing"]

_ENDS_DRIVE = frozenset(
    {"succeeded", "degraded", "failed", "paused", "needs_review", "interrupted"}
)
_AttributeValue = str | bool | int | float


def _attributes(event: Event) -> dict[str, _AttributeValue]:
    """An event's fields as span attributes (``None`` left out)."""
    out: dict[str, _AttributeValue] = {}
    for field in dataclasses.fields(event):
        value: Any = getattr(event, field.name)
        if isinstance(value, str | bool | int | float):
            out[f"firebreak.{field.name}"] = value
    return out


class OtelTracing:
    """Turns firebreak events into OpenTelemetry spans; build it with `install_tracing`.

    The events report what ended, so an attempt's span is recorded when the attempt ends,
    with its start set back by the measured duration; the run span stays open meanwhile.
    """

    def __init__(self, tracer_provider: TracerProvider | None = None) -> None:
        self.tracer = trace.get_tracer("firebreak", __version__, tracer_provider=tracer_provider)
        """The tracer spans are made with."""
        self._runs: dict[str, Span] = {}
        self._steps = StepTracker()
        self._unsubscribe: list[Callable[[], None]] = []

    def subscribe(self, to: EventHub = hub) -> OtelTracing:
        """Start tracing the events of `to` (the process-wide hub by default)."""
        self._unsubscribe.append(to.subscribe(self.handle))
        return self

    def close(self) -> None:
        """Unsubscribe, and end the run spans still open (marked ``firebreak.incomplete``)."""
        while self._unsubscribe:
            self._unsubscribe.pop()()
        while self._runs:
            _, span = self._runs.popitem()
            span.set_attribute("firebreak.incomplete", value=True)
            span.end()

    def __enter__(self) -> OtelTracing:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def handle(self, event: Event) -> None:
        """Record one event (the hub calls this)."""
        self._steps.note(event)
        if isinstance(event, RunStateChanged):
            self._run_changed(event)
        elif isinstance(event, StepAttempted):
            self._attempt(event)
        elif isinstance(event, StepStateChanged | QueueChanged):
            span = self._runs.get(event.run_id)
            if span is not None:
                span.add_event(type(event).__name__, _attributes(event))
        else:  # retries, rejections, fallbacks, breakers: on the run of the step, if known
            step = self._steps.current()
            span = None if step is None else self._runs.get(step.run_id)
            if span is not None and step is not None:
                attributes = _attributes(event)
                attributes["firebreak.agent"] = step.agent
                span.add_event(type(event).__name__, attributes)

    def _run_changed(self, event: RunStateChanged) -> None:
        if event.status == "running":
            stale = self._runs.pop(event.run_id, None)
            if stale is not None:  # its drive ended without telling us (cancelled)
                stale.set_attribute("firebreak.incomplete", value=True)
                stale.end()
            self._runs[event.run_id] = self.tracer.start_span(
                f"firebreak.run {event.source}",
                kind=SpanKind.INTERNAL,
                attributes={
                    "firebreak.workflow": event.source,
                    "firebreak.run_id": event.run_id,
                    "firebreak.resumed": event.resumed,
                },
            )
            return
        if event.status not in _ENDS_DRIVE:
            return
        span = self._runs.pop(event.run_id, None)
        if span is None:  # ended without running (invalid input): still worth a span
            span = self.tracer.start_span(
                f"firebreak.run {event.source}",
                attributes={"firebreak.workflow": event.source, "firebreak.run_id": event.run_id},
            )
        span.set_attribute("firebreak.status", event.status)
        if event.status == "interrupted":
            span.set_attribute("firebreak.incomplete", value=True)
        if event.reason:
            span.set_attribute("firebreak.reason", event.reason)
        if event.status == "failed":
            span.set_status(Status(StatusCode.ERROR, event.reason or "failed"))
        elif event.status == "succeeded":
            span.set_status(Status(StatusCode.OK))
        span.end()

    def _attempt(self, event: StepAttempted) -> None:
        end = time.time_ns()
        start = end - max(int(event.duration * 1e9), 0)
        parent = self._runs.get(event.run_id)
        context = None if parent is None else trace.set_span_in_context(parent)
        attributes: dict[str, _AttributeValue] = {
            "firebreak.workflow": event.source,
            "firebreak.run_id": event.run_id,
            "firebreak.agent": event.agent,
            "firebreak.attempt": event.attempt,
            "firebreak.outcome": event.outcome,
        }
        if event.error_type is not None:
            attributes["error.type"] = event.error_type
        span = self.tracer.start_span(
            f"firebreak.step {event.agent}",
            context=context,
            kind=SpanKind.INTERNAL,
            attributes=attributes,
            start_time=start,
        )
        if event.outcome != "ok":
            span.set_status(Status(StatusCode.ERROR, event.error_type or event.outcome))
        span.end(end_time=end)


def install_tracing(
    tracer_provider: TracerProvider | None = None, *, to: EventHub = hub
) -> OtelTracing:
    """Trace firebreak runs and step attempts: subscribe an `OtelTracing` to the hub.

    Args:
        tracer_provider: where spans go; default the global provider
            (``opentelemetry.trace.set_tracer_provider``).
        to: the hub to subscribe to.

    Returns:
        The subscriber; ``close()`` unsubscribes it and ends the run spans still open.
    """
    return OtelTracing(tracer_provider).subscribe(to)
