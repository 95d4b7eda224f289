"""Real processes on a real NATS JetStream: 3 workers and an orchestrator.

One test SIGKILLs a worker and the orchestrator mid-batch (shared server); the other
SIGKILLs its own nats-server mid-batch and starts it again. The store and the agents'
side-effect sink are on Redis.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import bus_backend_nats
import pytest
from processes import Procs, check_runs

import redis
from firebreak.bus.nats import NatsBus

pytestmark = pytest.mark.slow
AGENTS = "abcd"


@pytest.fixture
def nats_url() -> str:
    bus_backend_nats.require()
    return bus_backend_nats.NATS_URL


def check_batch(
    redis_url: str, prefix: str, sink: redis.Redis, runs: list[str], nats_url: str
) -> None:
    """Every run succeeded with each step committed once; each effect applied once; the
    task streams are empty and nothing was dead-lettered."""
    check_runs(redis_url, prefix, sink, runs)

    async def leftovers() -> dict[str, tuple[int, int]]:
        left: dict[str, tuple[int, int]] = {}
        async with NatsBus(nats_url, prefix=f"{prefix}-bus") as bus:
            for agent in AGENTS:
                queue = f"busbatch.{agent}"
                end = time.monotonic() + 5  # a redelivered duplicate may still be in hand
                while True:
                    info = await bus.js.stream_info(bus.stream(queue))
                    if info.state.messages == 0 or time.monotonic() > end:
                        break
                    await asyncio.sleep(0.1)
                dead = await bus.dead_letters(queue)
                left[queue] = (info.state.messages, len(dead))
        return left

    left = asyncio.run(leftovers())
    assert left == {f"busbatch.{a}": (0, 0) for a in AGENTS}, left


def wait_settled(nats_url: str, prefix: str, timeout: float = 15.0) -> None:
    """Wait until the workers' durables hold nothing pending or unacked: after a broker
    crash, tasks whose acks it lost come back (after the visibility timeout) as
    duplicates, and the workers must still be running to settle them."""

    async def settle() -> None:
        async with NatsBus(nats_url, prefix=f"{prefix}-bus") as bus:
            end = time.monotonic() + timeout
            for agent in AGENTS:
                stream = bus.stream(f"busbatch.{agent}")
                while True:
                    info = await bus.js.consumer_info(stream, bus.durable("firebreak-workers"))
                    if info.num_pending == 0 and info.num_ack_pending == 0:
                        break
                    assert time.monotonic() < end, f"{stream} never settled: {info}"
                    await asyncio.sleep(0.1)

    asyncio.run(settle())


@pytest.fixture
def nats_prefix(nats_url: str, prefix: str) -> Iterator[str]:
    """The bus prefix; its streams, consumers and bucket are deleted afterwards."""
    yield f"{prefix}-bus"
    asyncio.run(bus_backend_nats.cleanup(f"{prefix}-bus", nats_url))


def test_batch_survives_a_killed_worker_and_a_killed_orchestrator(
    procs: Procs,
    sink: redis.Redis,
    redis_url: str,
    nats_url: str,
    nats_prefix: str,
    prefix: str,
) -> None:
    """Every run completes; no step result is lost or committed twice; effects apply once."""
    store = f"{redis_url}?prefix={prefix}-store"
    bus = f"{nats_url}?prefix={nats_prefix}&visibility_timeout=1&max_deliveries=10"
    runs = [f"r{i}" for i in range(24)]
    procs.start_workers(3, bus, store)
    finished_first = procs.kill_worker_and_orchestrator(store, bus, runs)
    wait_settled(nats_url, prefix)
    procs.stop_workers(["w1", "w2"])
    assert finished_first < len(runs), "the orchestrator finished before it was killed"
    check_batch(redis_url, prefix, sink, runs, nats_url)


NATS_SERVER = shutil.which("nats-server") or "/usr/sbin/nats-server"


class NatsServer:
    """A throwaway nats-server with JetStream on a free port, storing in its own directory."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        log = (self.dir / "nats-server.log").open("ab")
        self.proc = subprocess.Popen(  # noqa: S603 - the system's nats-server
            [NATS_SERVER, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd", str(self.dir)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def restart_stop(self) -> None:
        """Stop it the way a restart does (SIGTERM: JetStream flushes what it accepted).

        Not SIGKILL: nats-server 2.9 may lose messages it acknowledged but had not yet
        written when it is killed outright, and a task the broker loses is never re-sent
        (the run then waits for its deadline) — a known gap, see the issue's note.
        """
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(15)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[NatsServer]:
    if not Path(NATS_SERVER).is_file():
        pytest.skip("nats-server is not installed")
    server = NatsServer(tmp_path / "nats")
    server.dir.mkdir()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_batch_pauses_and_resumes_across_a_broker_restart(
    procs: Procs, sink: redis.Redis, redis_url: str, own_nats: NatsServer, prefix: str
) -> None:
    """The NATS server is restarted mid-batch (stopped, then started again on the same port
    and directory): workers and the orchestrator ride it out; every run completes, nothing
    is lost, nothing is committed or applied twice."""
    store = f"{redis_url}?prefix={prefix}-store"
    bus = f"{own_nats.url}?prefix={prefix}-bus&visibility_timeout=1&max_deliveries=10"
    runs = [f"r{i}" for i in range(24)]
    procs.start_workers(3, bus, store)
    procs.start("o1", "orchestrator_main.py", store, bus, "5", *runs)
    procs.wait_for("o1", "done", count=4)
    own_nats.restart_stop()
    at_kill = sink.hlen(f"{prefix}-sink:effects")
    time.sleep(2.0)  # the outage: every process stays up, waiting
    for name, proc in procs.procs.items():
        assert proc.poll() is None, f"{name} died with the broker:\n{procs.log(name)}"
    at_restart = sink.hlen(f"{prefix}-sink:effects")
    own_nats.start()
    procs.wait_for("o1", "done", count=len(runs), timeout=40)
    wait_settled(own_nats.url, prefix)
    procs.stop_workers(["w0", "w1", "w2"])
    # Work paused: during the outage only steps already in a worker's hands ran (3 workers
    # with 4 slots each); then it resumed and finished.
    assert at_restart < len(runs) * 4, "the batch finished before the broker was killed"
    assert at_restart - at_kill <= 3 * 4, (at_kill, at_restart)
    check_batch(redis_url, prefix, sink, runs, own_nats.url)
