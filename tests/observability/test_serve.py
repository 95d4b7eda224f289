"""``firebreak serve``: a real process serving /metrics, queue sizes from a store, SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from obs_helpers import breaker_registry, http_get, kyc_workflow, parse, scan_workflow, value
from serve_app import app
from typer.testing import CliRunner

import firebreak as fb
from firebreak.store import SQLiteStore

APP = Path(__file__).with_name("serve_app.py")
pytestmark = pytest.mark.slow


@contextmanager
def serving(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """Start ``serve`` in a process; yield it and its /metrics URL once it listens."""
    process = subprocess.Popen(  # noqa: S603 - our own fixed arguments
        [sys.executable, str(APP), "serve", "--metrics-port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        assert process.stderr is not None
        before: list[str] = []  # warnings printed before the listening line
        found = None
        while (line := process.stderr.readline()) and len(before) < 5:
            found = re.search(r"http://\S+/metrics", line)
            if found:
                break
            before.append(line)
        assert found, "".join(before) + line
        process.before = "".join(before)  # type: ignore[attr-defined]
        yield process, found.group(0)
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def stop(process: subprocess.Popen[str], signum: signal.Signals) -> tuple[int, str]:
    process.send_signal(signum)
    _, err = process.communicate(timeout=10)
    return process.returncode, err


async def test_serve_exports_queue_sizes_from_the_store_until_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "runs.db"
    async with SQLiteStore(db) as store:
        engine = fb.Engine(store, registry=breaker_registry())
        await engine.run(scan_workflow(), 1, run_id="scan-1")
        await engine.run(scan_workflow(), 2, run_id="scan-2")
        await engine.run(kyc_workflow(), "ada", run_id="kyc-1")
    with serving("--store", f"sqlite:///{db}", "--poll", "0.2") as (process, url):
        deadline = time.monotonic() + 10
        while True:  # the first poll may not have finished yet
            status, _, body = await http_get(url)
            samples = parse(body)
            if value(samples, "firebreak_dlq_size", workflow="scan") is not None:
                break
            assert time.monotonic() < deadline, body
        assert status == 200
        assert value(samples, "firebreak_dlq_size", workflow="scan") == 2
        assert value(samples, "firebreak_manual_queue_size", workflow="kyc") == 1
        health = await http_get(url.replace("/metrics", "/healthz"))
        assert health[::2] == (200, "ok\n")
        code, err = stop(process, signal.SIGTERM)
    assert code == 0, err
    assert "stopped" in err


async def test_serve_without_a_store_stops_on_ctrl_c() -> None:
    with serving() as (process, url):
        status, _, body = await http_get(url)
        assert status == 200
        assert "firebreak_circuit_state" in body
        code, err = stop(process, signal.SIGINT)
    assert code == 0, err


def test_a_port_in_use_is_a_usage_error() -> None:
    with serving() as (process, url):
        port = url.rsplit(":", 1)[1].split("/")[0]
        result = CliRunner().invoke(app, ["serve", "--metrics-port", port])
        process.send_signal(signal.SIGTERM)
    assert result.exit_code == 2
    assert "cannot listen on 127.0.0.1" in result.output


def test_a_bad_store_url_is_a_usage_error() -> None:
    result = CliRunner().invoke(app, ["serve", "--metrics-port", "0", "--store", "nope"])
    assert result.exit_code == 2
    assert "no scheme" in result.output


async def test_a_sqlite_store_not_there_yet_is_served_with_a_warning(tmp_path: Path) -> None:
    """Silently made empty, a mistyped path hid a backlog; refused, a sidecar started
    before the application's first run would crash-loop: served, with a warning."""
    with serving("--store", f"sqlite:///{tmp_path}/later.db", "--poll", "0.2") as (process, url):
        status, _, _ = await http_get(url)
        assert status == 200
        code, err = stop(process, signal.SIGTERM)
        before = process.before  # type: ignore[attr-defined]
    assert code == 0, err
    assert "warning: no store at" in " ".join(before.split())


def test_serve_is_documented() -> None:
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    for option in ("--metrics-port", "--host", "--store", "--poll", "--log-json"):
        assert option in result.output
