"""Structured logs: every event with its run and step ids, as text or JSON lines."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from obs_helpers import run_everything

from firebreak import events
from firebreak.observability import configure_logging, install_logging
from firebreak.store import MemoryStore


@pytest.fixture
def restore_logger() -> Iterator[None]:
    """Leave the ``firebreak`` logger as configure_logging found it."""
    logger = logging.getLogger("firebreak")
    handlers, level, propagate = list(logger.handlers), logger.level, logger.propagate
    yield
    for handler in logger.handlers:
        if handler not in handlers:
            handler.close()
    logger.handlers[:] = handlers
    logger.setLevel(level)
    logger.propagate = propagate


@pytest.fixture
async def lines(restore_logger: None) -> list[dict[str, Any]]:
    stream = io.StringIO()
    configure_logging(json=True, level=logging.DEBUG, stream=stream)
    with install_logging():
        async with MemoryStore() as store:
            await run_everything(store)
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


async def test_every_line_is_one_json_object(lines: list[dict[str, Any]]) -> None:
    assert lines
    for line in lines:
        assert {"ts", "level", "logger", "message", "event"} <= set(line)
        assert line["ts"].endswith("Z")
        assert line["logger"] == "firebreak.events"


async def test_step_events_carry_run_and_step_ids(lines: list[dict[str, Any]]) -> None:
    attempts = [
        line for line in lines if line["event"] == "StepAttempted" and line["run_id"] == "inv-1"
    ]
    assert [(a["agent"], a["attempt"], a["outcome"]) for a in attempts] == [
        ("extract", 1, "error"),
        ("extract", 2, "error"),
        ("extract", 3, "ok"),
        ("enrich", 1, "error"),
        ("post", 1, "ok"),
    ]
    assert attempts[0]["workflow"] == "invoice"
    assert attempts[0]["error_type"] == "ConnectionError"
    assert attempts[0]["level"] == "warning"
    assert attempts[2]["level"] == "debug"


async def test_retries_and_rejections_get_the_ids_of_their_step(
    lines: list[dict[str, Any]],
) -> None:
    retries = [line for line in lines if line["event"] == "RetryScheduled"]
    assert [(r["workflow"], r["run_id"], r["agent"], r["attempt"]) for r in retries] == [
        ("invoice", "inv-1", "extract", 1),
        ("invoice", "inv-1", "extract", 2),
    ]
    opened = [line for line in lines if line["event"] == "BreakerStateChanged"]
    assert [(o["source"], o["new"], o["run_id"], o["level"]) for o in opened] == [
        ("ocr-api", "open", "scan-2", "warning")
    ]


async def test_levels_follow_how_bad_it_is(lines: list[dict[str, Any]]) -> None:
    runs = {
        (line["run_id"], line["status"]): line["level"]
        for line in lines
        if line["event"] == "RunStateChanged"
    }
    assert runs[("inv-1", "running")] == "info"
    assert runs[("inv-1", "degraded")] == "warning"
    assert runs[("scan-1", "failed")] == "error"
    assert runs[("kyc-1", "needs_review")] == "warning"


def test_text_logs_show_the_ids(restore_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(stream=stream)
    with install_logging():
        events.emit(
            events.RunStateChanged(source="invoice", run_id="inv-9", status="failed", reason="boom")
        )
    line = stream.getvalue().strip()
    assert "ERROR" in line
    assert "RunStateChanged" in line
    assert "[event=RunStateChanged workflow=invoice run_id=inv-9]" in line
    assert "reason=boom" in line


def test_configuring_again_replaces_the_handler(restore_logger: None) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(json=True, stream=first)
    configure_logging(json=True, stream=second, level="WARNING")
    with install_logging():
        events.emit(events.RunStateChanged(source="wf", run_id="r", status="running"))
        events.emit(events.RunStateChanged(source="wf", run_id="r", status="paused"))
    assert first.getvalue() == ""
    assert [json.loads(line)["status"] for line in second.getvalue().splitlines()] == ["paused"]


def test_json_lines_hold_exceptions_and_odd_values(restore_logger: None) -> None:
    stream = io.StringIO()
    configure_logging(json=True, stream=stream)
    log = logging.getLogger("firebreak.test")
    try:
        raise ValueError("multi\nline")
    except ValueError:
        log.exception("failed with %s", "style", extra={"thing": object(), "n": 3})
    (line,) = stream.getvalue().splitlines()
    data = json.loads(line)
    assert data["message"] == "failed with style"
    assert data["n"] == 3
    assert data["thing"].startswith("<object")
    assert "ValueError: multi\nline" in data["exc"]


def test_install_logging_can_use_any_logger() -> None:
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("test.firebreak.custom")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    logger.propagate = False
    with install_logging(logger):
        events.emit(events.QueueChanged(source="wf", queue="dlq", run_id="r", delta=1))
    (record,) = records
    assert record.levelno == logging.WARNING
    assert record.__dict__["run_id"] == "r"
    assert record.__dict__["queue"] == "dlq"
