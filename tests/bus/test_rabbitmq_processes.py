"""Real processes on a real RabbitMQ: 3 workers and an orchestrator, one of each SIGKILLed,
and a broker restart in the middle of a batch.

The store and the agents' side-effect sink are on Redis (as in `test_redis_processes.py`);
only the bus is RabbitMQ, so both servers are needed.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions
import pytest
from bus_backend_rabbitmq import AMQP_URL, cleanup, require
from processes import Procs, check_runs

import redis

pytestmark = pytest.mark.slow


@pytest.fixture
def amqp_url() -> str:
    require()
    return AMQP_URL


@pytest.fixture
def keys(sink: redis.Redis, amqp_url: str, prefix: str) -> Iterator[redis.Redis]:
    """The sink; this test's queues go afterwards too."""
    try:
        yield sink
    finally:
        asyncio.run(cleanup(prefix))


def _bus_url(amqp_url: str, prefix: str) -> str:
    sep = "&" if "?" in amqp_url else "?"
    return f"{amqp_url}{sep}prefix={prefix}-bus&visibility_timeout=1&max_deliveries=10"


async def _queue_depths(amqp_url: str, names: list[str]) -> dict[str, int]:
    connection = await aio_pika.connect(amqp_url)
    out = {}
    try:
        for name in names:
            try:
                async with connection.channel(publisher_confirms=False) as channel:
                    queue = await channel.declare_queue(name, passive=True)
                    out[name] = queue.declaration_result.message_count or 0
            except aiormq.exceptions.ChannelNotFoundEntity:
                out[name] = 0
    finally:
        await connection.close()
    return out


def _wait_for_empty_queues(amqp_url: str, prefix: str, timeout: float = 20) -> None:
    names = [f"{prefix}-bus:q:busbatch.{agent}" for agent in "abcd"]
    end = time.monotonic() + timeout
    while any(asyncio.run(_queue_depths(amqp_url, names)).values()):
        assert time.monotonic() < end, "copies of tasks were left in the queues"
        time.sleep(0.1)


def _check_batch(
    keys: redis.Redis, redis_url: str, amqp_url: str, prefix: str, runs: list[str]
) -> None:
    """Every run succeeded with 4 steps; each effect applied once; no task left or dead."""
    check_runs(redis_url, prefix, keys, runs)
    names = [f"{prefix}-bus:{kind}:busbatch.{agent}" for agent in "abcd" for kind in ("q", "dead")]
    depths = asyncio.run(_queue_depths(amqp_url, names))
    assert depths == dict.fromkeys(names, 0), depths  # all acked, nothing dead-lettered


def test_batch_survives_a_killed_worker_and_a_killed_orchestrator(
    procs: Procs, keys: redis.Redis, redis_url: str, amqp_url: str, prefix: str
) -> None:
    """Every run completes; no step result is lost or committed twice; effects apply once."""
    store = f"{redis_url}?prefix={prefix}-store"
    bus = _bus_url(amqp_url, prefix)
    runs = [f"r{i}" for i in range(24)]
    procs.start_workers(3, bus, store)
    finished_first = procs.kill_worker_and_orchestrator(store, bus, runs)
    procs.stop_workers(["w1", "w2"], timeout=10)
    assert finished_first < len(runs), "the orchestrator finished before it was killed"
    _check_batch(keys, redis_url, amqp_url, prefix, runs)


def _rabbitmqctl(*args: str, timeout: float = 60) -> None:
    tool = shutil.which("rabbitmqctl")
    assert tool is not None
    subprocess.run([tool, *args], check=True, capture_output=True, timeout=timeout)  # noqa: S603


def _local_broker(amqp_url: str) -> bool:
    host = urlsplit(amqp_url).hostname or "127.0.0.1"
    return shutil.which("rabbitmqctl") is not None and host in {"127.0.0.1", "localhost", "::1"}


def test_batch_survives_a_broker_restart(
    procs: Procs, keys: redis.Redis, redis_url: str, amqp_url: str, prefix: str
) -> None:
    """The broker stops mid-batch (stop_app) and starts again: work pauses, then resumes,
    and nothing is lost. The server is started again whatever happens."""
    if not _local_broker(amqp_url):
        pytest.skip("restarting the broker needs rabbitmqctl and a local server")
    store = f"{redis_url}?prefix={prefix}-store"
    bus = _bus_url(amqp_url, prefix)
    runs = [f"r{i}" for i in range(48)]
    procs.start_workers(2, bus, store)
    procs.start("o1", "orchestrator_main.py", store, bus, "1.5", *runs)
    end = time.monotonic() + 20
    while sum(map(int, keys.hvals(f"{prefix}-sink:calls"))) < 8:  # a few steps ran
        assert time.monotonic() < end, procs.log("o1")
        time.sleep(0.005)
    stopped_at = procs.log("o1").count("done ")
    try:
        _rabbitmqctl("stop_app")
        time.sleep(2.0)
        paused = procs.log("o1").count("done ")
        time.sleep(1.0)
        assert procs.log("o1").count("done ") == paused, "runs went on without a broker"
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
    procs.wait_for("o1", "done", count=len(runs), timeout=45)
    assert stopped_at < len(runs), "the batch finished before the broker stopped"
    # Steps the outage held up past their budget were sent again (BusExecutor resend);
    # the workers take those copies and drop them, their steps being committed.
    _wait_for_empty_queues(amqp_url, prefix)
    for i in range(2):
        assert procs.procs[f"w{i}"].poll() is None, procs.log(f"w{i}")
        procs.procs[f"w{i}"].send_signal(signal.SIGTERM)
    for i in range(2):
        assert procs.procs[f"w{i}"].wait(10) == 0, procs.log(f"w{i}")
    assert procs.procs["o1"].wait(10) == 0, procs.log("o1")
    _check_batch(keys, redis_url, amqp_url, prefix, runs)
