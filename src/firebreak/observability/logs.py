"""Structured logs: every event as a log record with run and step ids, text or JSON lines.

>>> from firebreak.observability import configure_logging, install_logging
>>> handler = configure_logging(json=True, level="INFO")   # one JSON object per line
>>> event_log = install_logging()                          # log every firebreak event
>>> event_log.close()

A JSON line looks like::

    {"ts": "2026-01-05T10:31:02.120Z", "level": "warning", "logger": "firebreak.events",
     "message": "StepAttempted ...", "event": "StepAttempted", "workflow": "invoice",
     "run_id": "inv-42", "agent": "extract", "attempt": 1, "outcome": "timeout", ...}
"""

from __future__ import annotations

import dataclasses
import json as jsonlib
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from typing import IO, Any

from firebreak.events import (
    BreakerBackendChanged,
    BreakerStateChanged,
    BudgetExhausted,
    CallRejected,
    Event,
    EventHub,
    FallbackUsed,
    GaveUp,
    QueueChanged,
    RunStateChanged,
    StepAttempted,
    StepStateChanged,
    hub,
)
from firebreak.observability._steps import StepTracker

__all__ = ["EventLogger", "JsonFormatter", "TextFormatter", "configure_logging", "install_logging"]

EVENT_LOGGER = "firebreak.events"
"""The logger events are logged to."""

# Attributes every LogRecord has: anything else on a record came in through `extra`.
_RESERVED = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# The fields shown first, in this order, in text logs.
_IDS = ("event", "workflow", "run_id", "agent")


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, then every ``extra`` field.

    Values JSON cannot hold are written as their ``str``; an exception goes in ``exc``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as a single line of JSON."""
        when = datetime.fromtimestamp(record.created, tz=UTC)
        out: dict[str, Any] = {
            "ts": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            out.setdefault(key, value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return jsonlib.dumps(out, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``time level logger message`` followed by the ``extra`` ids as ``key=value``."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render `record` as text, with its run and step ids appended."""
        text = super().format(record)
        extras = _extras(record)
        ids = " ".join(f"{key}={extras[key]}" for key in _IDS if extras.get(key))
        if ids:
            head, newline, tail = text.partition("\n")
            text = f"{head} [{ids}]{newline}{tail}"
        return text


def configure_logging(
    json: bool = False,  # noqa: FBT001, FBT002 - the one switch, as the docs show it
    level: int | str = logging.INFO,
    *,
    stream: IO[str] | None = None,
    logger: str = "firebreak",
) -> logging.Handler:
    """Send firebreak's logs to `stream` (stderr) as text or, with ``json=True``, JSON lines.

    Configures the ``firebreak`` logger only (your application's logging is untouched):
    sets its level, replaces the handler an earlier call installed, and stops propagation
    so lines are not printed twice by a root handler. Pair with `install_logging` to log
    every event.

    Returns:
        The handler installed.
    """
    target = logging.getLogger(logger)
    for old in [h for h in target.handlers if getattr(h, "_firebreak", False)]:
        target.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if json else TextFormatter())
    handler._firebreak = True  # type: ignore[attr-defined]  # noqa: SLF001 - our own mark
    target.addHandler(handler)
    target.setLevel(level)
    target.propagate = False
    return handler


def _level(event: Event) -> int:  # noqa: PLR0911 - a table, written as code
    """How loud an event is: failures are errors, trouble handled is a warning."""
    if isinstance(event, RunStateChanged | StepStateChanged):
        if event.status in ("failed", "compensation_failed"):
            return logging.ERROR
        if event.status in ("degraded", "paused", "needs_review", "skipped"):
            return logging.WARNING
        return logging.INFO
    if isinstance(event, StepAttempted):
        return logging.DEBUG if event.outcome == "ok" else logging.WARNING
    if isinstance(event, BreakerStateChanged):
        return logging.WARNING if event.new == "open" else logging.INFO
    if isinstance(event, BreakerBackendChanged):
        return logging.WARNING if event.backend == "local" else logging.INFO
    if isinstance(event, GaveUp | BudgetExhausted | CallRejected | FallbackUsed):
        return logging.WARNING
    if isinstance(event, QueueChanged):
        return logging.WARNING if event.delta > 0 else logging.INFO
    return logging.INFO


class EventLogger:
    """Logs every firebreak event; build it with `install_logging`.

    Each record carries ``event`` (the class name), ``workflow``, ``run_id`` and ``agent``
    when known, and every field of the event, as ``extra`` attributes: the JSON formatter
    writes them out as keys. Retries and rejections, which name only their policy, get the
    ids of the step they happened in (see `firebreak.observability._steps`).
    """

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.logger = logger if logger is not None else logging.getLogger(EVENT_LOGGER)
        """Where the records go."""
        self._steps = StepTracker()
        self._unsubscribe: list[Callable[[], None]] = []

    def subscribe(self, to: EventHub = hub) -> EventLogger:
        """Start logging the events of `to` (the process-wide hub by default)."""
        self._unsubscribe.append(to.subscribe(self.handle))
        return self

    def close(self) -> None:
        """Stop logging: unsubscribe from every hub. Idempotent."""
        while self._unsubscribe:
            self._unsubscribe.pop()()

    def __enter__(self) -> EventLogger:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def handle(self, event: Event) -> None:
        """Log one event (the hub calls this)."""
        self._steps.note(event)
        level = _level(event)
        if not self.logger.isEnabledFor(level):
            return
        name = type(event).__name__
        fields = {f.name: getattr(event, f.name) for f in dataclasses.fields(event)}
        extra: dict[str, Any] = {"event": name}
        if isinstance(event, RunStateChanged | StepAttempted | StepStateChanged | QueueChanged):
            extra["workflow"] = event.source
        else:
            step = self._steps.current()
            if step is not None:
                extra.update(workflow=step.workflow, run_id=step.run_id, agent=step.agent)
        for key, value in fields.items():
            extra[f"event_{key}" if key in _RESERVED else key] = value
        shown = " ".join(
            f"{key}={value}" for key, value in fields.items() if value not in ("", None)
        )
        self.logger.log(level, "%s %s", name, shown, extra=extra)


def install_logging(logger: logging.Logger | None = None, *, to: EventHub = hub) -> EventLogger:
    """Log every firebreak event to `logger` (default ``firebreak.events``).

    Levels: failed runs and steps are errors; degraded, paused, skipped, review, failed
    attempts, give-ups, rejections, fallbacks and a breaker opening are warnings; the
    rest is info, and successful attempts are debug.

    Returns:
        The subscriber; ``close()`` unsubscribes it.
    """
    return EventLogger(logger).subscribe(to)
