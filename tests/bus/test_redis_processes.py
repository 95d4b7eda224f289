"""Real processes on a real Redis: 3 workers and an orchestrator, one of each SIGKILLed."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import HERE, Procs

import redis
from firebreak.store import RunStatus, StepStatus

pytestmark = pytest.mark.slow


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
    procs: Procs, keys: redis.Redis, redis_url: str, prefix: str
) -> None:
    """Every run completes; no step result is lost or committed twice; effects apply once."""
    store = f"{redis_url}?prefix={prefix}-store"
    bus = f"{redis_url}?prefix={prefix}-bus&visibility_timeout=1&max_deliveries=10"
    runs = [f"r{i}" for i in range(24)]
    for i in range(3):
        procs.start(
            f"w{i}", "worker_main.py", "worker", "flows:batch", "--bus", bus, "--store", store,
            "--concurrency", "4", "--name", f"w{i}", "--drain", "5",
        )  # fmt: skip
    for i in range(3):
        procs.wait_for(f"w{i}", "ready")
    procs.start("o1", "orchestrator_main.py", store, bus, "1.5", *runs)
    procs.wait_for("o1", "done", count=3)
    procs.procs["w0"].send_signal(signal.SIGKILL)  # dies holding tasks
    procs.wait_for("o1", "done", count=8)
    procs.procs["o1"].send_signal(signal.SIGKILL)  # dies mid-batch, leases held
    finished_first = procs.log("o1").count("done ")
    procs.start("o2", "orchestrator_main.py", store, bus, "1.5", *runs)
    procs.wait_for("o2", "done", count=len(runs), timeout=40)
    for i in (1, 2):
        procs.procs[f"w{i}"].send_signal(signal.SIGTERM)
    for i in (1, 2):
        assert procs.procs[f"w{i}"].wait(10) == 0, procs.log(f"w{i}")
        assert "worker stopped:" in procs.log(f"w{i}")
    assert finished_first < len(runs), "the orchestrator finished before it was killed"

    import asyncio  # noqa: PLC0415

    from firebreak.store.redis import RedisStore  # noqa: PLC0415

    async def read() -> dict[str, tuple[object, dict[str, object]]]:
        async with RedisStore(redis_url, prefix=f"{prefix}-store") as opened:
            out = {}
            for run_id in runs:
                record = await opened.get_run(run_id)
                out[run_id] = (record, await opened.get_steps(run_id))
            return out

    stored = asyncio.run(read())
    effects = keys.hgetall(f"{prefix}-sink:effects")
    calls = {k: int(v) for k, v in keys.hgetall(f"{prefix}-sink:calls").items()}
    for i, run_id in enumerate(runs):
        record, steps = stored[run_id]
        assert record is not None, run_id
        assert record.status == RunStatus.SUCCEEDED, run_id  # type: ignore[attr-defined]
        assert sorted(steps) == ["a", "b", "c", "d"], run_id
        assert all(s.status == StepStatus.SUCCEEDED for s in steps.values())  # type: ignore[attr-defined]
        assert len({s.seq for s in steps.values()}) == 4  # type: ignore[attr-defined]
        for agent, step in steps.items():
            assert step.output["token"] == effects[f"{run_id}/{agent}"]  # type: ignore[attr-defined]
        assert steps["d"].output["v"] == i * 2 + i + 1  # type: ignore[attr-defined]
    assert len(effects) == len(runs) * 4  # each effect applied once, by its idempotency key
    assert sum(calls.values()) >= len(runs) * 4
    # The task streams are empty: everything was acked (or dead-lettered: nothing was).
    for agent in "abcd":
        assert keys.xlen(f"{prefix}-bus:q:busbatch.{agent}") == 0
        assert keys.xlen(f"{prefix}-bus:dead:busbatch.{agent}") == 0
