"""Real processes on a Kafka-protocol broker (Tansu): 3 workers and an orchestrator, one of
each SIGKILLed. The store and the side-effect sink are Redis, as in the Redis test."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import kafka_backend
import pytest
from processes import HERE, Procs, check_runs

import redis
from firebreak.bus.kafka import KafkaBus

pytestmark = pytest.mark.slow


@pytest.fixture
def kafka() -> str:
    kafka_backend.require()
    return kafka_backend.bootstrap()


@pytest.fixture
def keys(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        found = list(client.scan_iter(match=f"{prefix}*"))
        if found:
            client.delete(*found)
        client.close()


@pytest.fixture
def procs(tmp_path: Path, redis_url: str, prefix: str) -> Iterator[Procs]:
    env = dict(os.environ, FBTEST_SINK=f"{redis_url}|{prefix}-sink", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    running = Procs(tmp_path, env)
    try:
        yield running
    finally:
        running.stop_all()


def test_batch_survives_a_killed_worker_and_a_killed_orchestrator(
    procs: Procs, keys: redis.Redis, redis_url: str, prefix: str, kafka: str
) -> None:
    """Every run completes; no step result is lost or committed twice; effects apply once."""
    store = f"{redis_url}?prefix={prefix}-store"
    bus = kafka_backend.url(f"{prefix}-bus", visibility_timeout=1, max_deliveries=10)
    runs = [f"r{i}" for i in range(24)]
    for i in range(3):
        procs.start(
            f"w{i}", "worker_main.py", "worker", "flows:batch", "--bus", bus, "--store", store,
            "--concurrency", "4", "--name", f"w{i}", "--drain", "5",
        )  # fmt: skip
    for i in range(3):
        procs.wait_for(f"w{i}", "ready")
    procs.start("o1", "orchestrator_main.py", store, bus, "1.5", *runs)
    procs.wait_for("o1", "done", count=3, timeout=20)
    procs.procs["w0"].send_signal(signal.SIGKILL)  # dies holding tasks
    procs.wait_for("o1", "done", count=8, timeout=20)
    procs.procs["o1"].send_signal(signal.SIGKILL)  # dies mid-batch, leases held
    finished_first = procs.log("o1").count("done ")
    procs.start("o2", "orchestrator_main.py", store, bus, "1.5", *runs)
    procs.wait_for("o2", "done", count=len(runs), timeout=40)
    for i in (1, 2):
        procs.procs[f"w{i}"].send_signal(signal.SIGTERM)
    for i in (1, 2):
        assert procs.procs[f"w{i}"].wait(15) == 0, procs.log(f"w{i}")
        assert "worker stopped:" in procs.log(f"w{i}")
    assert finished_first < len(runs), "the orchestrator finished before it was killed"

    check_runs(redis_url, prefix, keys, runs)

    async def dead_letters() -> int:
        async with KafkaBus(kafka, prefix=f"{prefix}-bus") as opened_bus:
            return sum([len(await opened_bus.dead_letters(f"busbatch.{a}")) for a in "abcd"])

    dead = asyncio.run(dead_letters())
    assert dead == 0, "a task was dead-lettered"
