"""Real processes on a real Redis: 3 workers and an orchestrator, one of each SIGKILLed."""

from __future__ import annotations

import time

import pytest
from processes import Procs, check_runs

import redis

pytestmark = pytest.mark.slow


def test_batch_survives_a_killed_worker_and_a_killed_orchestrator(
    procs: Procs, sink: redis.Redis, redis_url: str, prefix: str
) -> None:
    """Every run completes; no step result is lost or committed twice; effects apply once."""
    store = f"{redis_url}?prefix={prefix}-store"
    bus = f"{redis_url}?prefix={prefix}-bus&visibility_timeout=1&max_deliveries=10"
    runs = [f"r{i}" for i in range(24)]
    procs.start_workers(3, bus, store)
    finished_first = procs.kill_worker_and_orchestrator(store, bus, runs)
    # A task the killed worker held is reclaimed by a live one after the visibility
    # timeout (1 s), found done, and acked: o2 may finish the batch before that (it takes
    # o1's runs over at once, o1's process being gone), so the workers get the time.
    streams = [f"{prefix}-bus:q:busbatch.{agent}" for agent in "abcd"]
    deadline = time.monotonic() + 15
    while any(sink.xlen(s) for s in streams) and time.monotonic() < deadline:
        time.sleep(0.05)
    procs.stop_workers(["w1", "w2"], timeout=10)
    assert finished_first < len(runs), "the orchestrator finished before it was killed"

    check_runs(redis_url, prefix, sink, runs)
    # The task streams are empty: everything was acked (or dead-lettered: nothing was).
    for agent in "abcd":
        assert sink.xlen(f"{prefix}-bus:q:busbatch.{agent}") == 0
        assert sink.xlen(f"{prefix}-bus:dead:busbatch.{agent}") == 0
