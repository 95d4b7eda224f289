"""Runs through the in-process bus: workers are tasks of this process, deaths are cancels."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from firebreak import Engine, MemoryStore, RunStatus, SQLiteStore, StepStatus
from firebreak.bus import BusPolicy, open_bus
from firebreak.bus.inproc import InprocBus
from firebreak.engine.bus_executor import BusExecutor
from firebreak.engine.worker import Worker

sys.path.insert(0, str(Path(__file__).resolve().parent))
import flows

POLICY = BusPolicy(visibility_timeout=0.5, max_deliveries=5)
ALL = [flows.batch, flows.mixed, flows.ask, flows.crash]


@pytest.fixture
def bus() -> InprocBus:
    return InprocBus(name=f"test-{uuid.uuid4().hex[:8]}", policy=POLICY)


@pytest.fixture
async def store() -> AsyncIterator[MemoryStore]:
    async with MemoryStore() as opened:
        yield opened


def start_workers(
    bus: InprocBus, store: MemoryStore, n: int
) -> list[tuple[Worker, asyncio.Task[None]]]:
    out = []
    for i in range(n):
        worker = Worker(ALL, bus=bus, store=store, concurrency=4, name=f"w{i}", drain=2.0)
        out.append((worker, asyncio.create_task(worker.run())))
    return out


async def stop_workers(workers: list[tuple[Worker, asyncio.Task[None]]]) -> None:
    for worker, _ in workers:
        worker.stop()
    for _, task in workers:
        if not task.done():
            await task


async def test_remote_outcomes_settle_like_local_ones(bus: InprocBus, store: MemoryStore) -> None:
    """Success, degradation, review and failure end the same through the bus as locally."""
    workers = start_workers(bus, store, 1)
    try:
        async with BusExecutor(bus, store, poll=1.0) as executor:
            engine = Engine(store, executor=executor)
            remote = {
                wf.name: await engine.run(wf, {"n": 3}, run_id=f"bus-{wf.name}") for wf in ALL
            }
        local_engine = Engine(store)
        local = {
            wf.name: await local_engine.run(wf, {"n": 3}, run_id=f"loc-{wf.name}") for wf in ALL
        }
    finally:
        await stop_workers(workers)
    for name, result in remote.items():
        other = local[name]
        assert result.status == other.status, name
        assert result.missing == other.missing, name
        assert result.error == other.error, name
        assert len(result.reviews) == len(other.reviews), name
        bus_steps = await store.get_steps(f"bus-{name}")
        local_steps = await store.get_steps(f"loc-{name}")
        assert {k: (v.status, v.error, v.degraded_reason) for k, v in bus_steps.items()} == {
            k: (v.status, v.error, v.degraded_reason) for k, v in local_steps.items()
        }, name
    assert remote["busbatch"].outputs["d"]["v"] == 3 * 2 + 3 + 1
    assert remote["busmixed"].outputs["uses"] == {"flaky": -1, "degraded": ["flaky"]}
    assert remote["busmixed"].status == RunStatus.DEGRADED
    assert remote["busask"].status == RunStatus.NEEDS_REVIEW
    items = await store.review_list()
    assert sorted(i.suggestions for i in items) == [[1, 2], [1, 2]]
    assert remote["buscrash"].status == RunStatus.FAILED
    assert workers[0][0].stats.committed == 4 + 3 + 1 + 1


async def test_poison_task_fails_its_step(bus: InprocBus, store: MemoryStore) -> None:
    """A task that keeps dying goes to the dead letters and its step fails: the run ends."""
    policy = BusPolicy(visibility_timeout=0.2, max_deliveries=2)
    poison_bus = InprocBus(name=f"poison-{uuid.uuid4().hex[:8]}", policy=policy)

    async def killer() -> None:  # takes the task and dies with it, twice
        for i in range(2):
            consumer = poison_bus.consumer(
                ["buscrash.boom"], group="firebreak-workers", name=f"k{i}"
            )
            got = await consumer.get(5.0)
            assert got is not None
            await consumer.close()

    async with BusExecutor(poison_bus, store, poll=0.5) as executor:
        engine = Engine(store, executor=executor)
        run = asyncio.create_task(engine.run(flows.crash, {"n": 1}, run_id="poisoned"))
        await killer()
        worker = Worker([flows.crash], bus=poison_bus, store=store, name="survivor")
        serving = asyncio.create_task(worker.run())
        result = await asyncio.wait_for(run, 10)
        worker.stop()
        await serving
    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert result.error["type"].endswith("PoisonTask")
    assert worker.stats.dead == 1
    assert worker.stats.executed == 0
    letters = await poison_bus.dead_letters("buscrash.boom")
    assert [d.body["run_id"] for d in letters] == ["poisoned"]


async def test_batch_survives_a_dead_worker_and_a_dead_orchestrator(
    bus: InprocBus, store: MemoryStore
) -> None:
    """Every run completes with each step committed once and each effect applied once."""
    flows.CALLS.clear()
    flows.EFFECTS.clear()
    runs = [f"r{i}" for i in range(30)]
    workers = start_workers(bus, store, 3)
    first = BusExecutor(bus, store, poll=1.0, name="orch-1")
    engine = Engine(store, executor=first, lease_ttl=2.0)
    tasks = [
        asyncio.create_task(engine.run(flows.batch, {"n": i}, run_id=r)) for i, r in enumerate(runs)
    ]
    await asyncio.sleep(0.25)
    workers[0][1].cancel()  # a worker dies holding tasks: the bus redelivers them
    await asyncio.sleep(0.1)
    for task in tasks[:15]:  # the orchestrator of half the runs dies
        task.cancel()
    await asyncio.gather(*tasks[:15], return_exceptions=True)
    results: dict[str, Any] = {}
    for task, run_id in zip(tasks[15:], runs[15:], strict=True):
        results[run_id] = await asyncio.wait_for(task, 20)
    await first.close()
    async with BusExecutor(bus, store, poll=1.0, name="orch-2") as second:
        replacement = Engine(store, executor=second, lease_ttl=2.0)
        for i, run_id in enumerate(runs[:15]):
            results[run_id] = await asyncio.wait_for(
                replacement.run(flows.batch, {"n": i}, run_id=run_id), 20
            )
    await stop_workers(workers[1:])
    with pytest.raises(asyncio.CancelledError):
        await workers[0][1]
    for i, run_id in enumerate(runs):
        result = results[run_id]
        assert result.status == RunStatus.SUCCEEDED, (run_id, result)
        assert result.outputs["d"]["v"] == i * 2 + i + 1
        steps = await store.get_steps(run_id)
        assert sorted(steps) == ["a", "b", "c", "d"]
        assert all(s.status == StepStatus.SUCCEEDED for s in steps.values())
        assert len({s.seq for s in steps.values()}) == 4
        for agent, step in steps.items():  # the committed output names the effect that stands
            assert step.output["token"] == flows.EFFECTS[f"{run_id}/{agent}"]
    assert len(flows.EFFECTS) == len(runs) * 4
    stats = [w.stats for w, _ in workers]
    # Each step was committed first by exactly one worker; every other copy was dropped.
    assert sum(s.committed for s in stats) == len(runs) * 4
    assert all(n >= 1 for n in flows.CALLS.values())


async def test_engine_with_a_bus_url_runs_steps_on_workers(tmp_path: Path) -> None:
    """`Engine(store, bus=URL)` publishes steps; a worker on the same bus runs them."""
    store = SQLiteStore(tmp_path / "bus-url.db")
    async with store, open_bus("inproc://engine-bus-url") as bus:
        worker = Worker([flows.batch], bus=bus, store=store, name="w")
        serving = asyncio.create_task(worker.run())
        async with Engine(store, bus="inproc://engine-bus-url") as engine:
            result = await engine.run(flows.batch, {"n": 2}, run_id="via-url")
        worker.stop()
        await serving
    assert result.status == RunStatus.SUCCEEDED
    assert result["d"]["v"] == 2 * 2 + 2 + 1
    assert worker.stats.committed == len(flows.batch.agents)
