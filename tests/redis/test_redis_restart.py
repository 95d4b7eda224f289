"""Restart of the Redis server in the middle of a batch of runs: a clean error, then resume.

The shared test server keeps nothing on disk, so this test starts its own ``redis-server``
on a free port with ``appendonly yes`` and ``appendfsync always``, SIGKILLs it while runs
are in flight and starts it again on the same port and directory.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import firebreak as fb
import redis
from firebreak.errors import StoreError
from firebreak.events import StepStateChanged, subscribe
from firebreak.store import RunStatus
from firebreak.store.redis import RedisStore

REDIS_SERVER = shutil.which("redis-server")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed"),
]
AGENTS = ("fetch", "parse", "score", "store")


class Server:
    """A throwaway redis-server with an fsync-always append-only file."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.proc = subprocess.Popen(  # noqa: S603  -- the system's redis-server
            [
                REDIS_SERVER,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        try:
            while True:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    yield srv
    srv.stop()


def batch_workflow(calls: Counter[tuple[str, str]]) -> fb.Workflow:
    """fetch -> parse -> score -> store, each counting its calls per run."""
    wf = fb.Workflow("batch", deadline=60)

    async def work(ctx: fb.Context, name: str) -> str:
        calls[(ctx.run_id, name)] += 1
        await asyncio.sleep(0.01)
        return f"{ctx.run_id}:{name}"

    @wf.agent(timeout=5)
    async def fetch(ctx: fb.Context, job: dict[str, int]) -> str:
        return await work(ctx, "fetch")

    @wf.agent(after=[fetch], timeout=5)
    async def parse(ctx: fb.Context, fetch: str) -> str:
        return await work(ctx, "parse")

    @wf.agent(after=[parse], timeout=5)
    async def score(ctx: fb.Context, parse: str) -> str:
        return await work(ctx, "score")

    @wf.agent(after=[score], timeout=5)
    async def store(ctx: fb.Context, score: str) -> str:
        return await work(ctx, "store")

    return wf


async def test_runs_in_flight_fail_cleanly_and_resume_after_a_restart(server: Server) -> None:
    calls: Counter[tuple[str, str]] = Counter()
    acked: set[tuple[str, str]] = set()
    killed, enough = asyncio.Event(), asyncio.Event()

    def on_event(event: object) -> None:
        if isinstance(event, StepStateChanged) and not killed.is_set():
            acked.add((event.run_id, event.agent))
            if len(acked) >= 15:  # a third of the batch's steps committed
                enough.set()

    wf = batch_workflow(calls)
    run_ids = [f"run-{i}" for i in range(12)]
    unsubscribe = subscribe(on_event)
    async with RedisStore(server.url, prefix="fault") as store:
        engine = fb.Engine(store, lease_ttl=30)
        try:
            batch = asyncio.gather(
                *(engine.run(wf, {"n": i}, run_id=r) for i, r in enumerate(run_ids)),
                return_exceptions=True,
            )
            await asyncio.wait_for(enough.wait(), 20)
            server.kill()
            killed.set()
            outcomes = await asyncio.wait_for(batch, 30)
        finally:
            unsubscribe()
        errors = [o for o in outcomes if isinstance(o, BaseException)]
        assert errors, "the kill came after every run had finished"
        for err in errors:
            assert isinstance(err, StoreError), repr(err)
            assert f"127.0.0.1:{server.port}" in str(err)
            assert "\n" not in str(err)
        finished = {o.run_id for o in outcomes if not isinstance(o, BaseException)}
        assert all(
            o.status == RunStatus.SUCCEEDED for o in outcomes if not isinstance(o, BaseException)
        )
        before_restart = Counter(calls)

        server.start()  # same port, same directory: the append-only file is read back
        for run_id in run_ids:
            result = await engine.run(wf, run_id=run_id)
            assert result.status == RunStatus.SUCCEEDED, (run_id, result)
            assert result["store"] == f"{run_id}:store"
            steps = await store.get_steps(run_id)
            assert list(steps) == list(AGENTS)
            assert [s.seq for s in steps.values()] == [1, 2, 3, 4]
        rerun = calls - before_restart
        assert not (set(rerun) & acked), "an acknowledged step was lost and ran again"
        assert not any(run_id in finished for run_id, _ in rerun)
        assert all(n == 1 for n in rerun.values())
        await store.destroy()
