"""A worker reads a task's lease and step in one call when the store offers one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

import firebreak as fb
from firebreak import MemoryStore
from firebreak.bus import BusPolicy
from firebreak.bus.inproc import InprocBus
from firebreak.engine.bus_executor import BusExecutor
from firebreak.engine.executor import StepCall
from firebreak.engine.worker import Worker
from firebreak.errors import StaleLease
from firebreak.store import Lease, RunRecord, StepRecord, StepStatus

CALLS: list[str] = []

wf = fb.Workflow("checkwf")


@wf.agent(timeout=5)
async def charge(ctx: fb.Context, run: dict[str, Any]) -> int:
    CALLS.append(ctx.run_id)
    return int(run["n"]) * 10


@wf.agent(after=[charge], timeout=5)
async def receipt(ctx: fb.Context, charge: int) -> int:
    CALLS.append(ctx.run_id)
    return charge + 1


class CheckingStore(MemoryStore):
    """A store with the one-read check; it counts the worker's reads of each kind."""

    def __init__(self) -> None:
        super().__init__()
        self.checks = 0
        self.step_reads = 0
        self.run_reads = 0

    async def get_lease_and_step(
        self, run_id: str, agent: str
    ) -> tuple[Lease | None, StepRecord | None]:
        self.checks += 1
        return await super().get_lease_and_step(run_id, agent)

    async def get_run(self, run_id: str) -> RunRecord | None:
        self.run_reads += 1
        return await super().get_run(run_id)

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        self.step_reads += 1
        return await super().get_steps(run_id)


class PlainStore(CheckingStore):
    """A store without the one-read check (`SupportsLeaseAndStep` opted out)."""

    get_lease_and_step = None  # type: ignore[assignment]  # a None method fails isinstance


@pytest.fixture
async def store() -> Any:
    CALLS.clear()
    async with CheckingStore() as opened:
        yield opened


@pytest.fixture
def bus() -> InprocBus:
    return InprocBus(name=f"check-{uuid.uuid4().hex[:8]}", policy=BusPolicy(visibility_timeout=5))


async def serve(bus: InprocBus, store: CheckingStore) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker([wf], bus=bus, store=store, name="w", drain=1.0)
    return worker, asyncio.create_task(worker.run())


def step_call(run_id: str, lease: Lease) -> StepCall:
    spec = wf.agents["charge"]
    return StepCall(
        workflow=wf.name,
        spec=spec,
        run_id=run_id,
        run_input={"n": 4},
        inputs=spec.call_kwargs({"n": 4}, {}),
        lease=lease,
    )


async def test_each_task_costs_one_check_and_no_read_of_every_step(
    bus: InprocBus, store: CheckingStore
) -> None:
    """A run through the bus: one `get_lease_and_step` per task, no `get_steps`."""
    worker, serving = await serve(bus, store)
    async with BusExecutor(bus, store, poll=1.0) as executor:
        result = await fb.Engine(store, executor=executor).run(wf, {"n": 4}, run_id="r1")
    worker.stop()
    await serving
    assert result.status == fb.RunStatus.SUCCEEDED
    assert result.outputs["receipt"] == 41
    assert (store.checks, worker.stats.executed, worker.stats.committed) == (2, 2, 2)
    assert store.step_reads == 0


async def test_a_stale_task_is_dropped_through_the_check(
    bus: InprocBus, store: CheckingStore
) -> None:
    """A task whose lease is no longer the run's runs nothing; its orchestrator's wait ends
    with `StaleLease`."""
    await store.create_run("r-stale", wf.name, {"n": 4})
    current = await store.acquire_lease("r-stale", "orch-2", ttl=10)
    old = Lease(run_id="r-stale", owner="orch-1", token=current.token - 1, expires_at=0.0)
    worker, serving = await serve(bus, store)
    async with BusExecutor(bus, store, poll=1.0) as executor:
        with pytest.raises(StaleLease):
            await asyncio.wait_for(executor.execute(step_call("r-stale", old)), 10)
    worker.stop()
    await serving
    assert CALLS == []
    assert (worker.stats.stale, worker.stats.executed, store.checks) == (1, 0, 1)


async def test_a_committed_step_is_dropped_through_the_check(
    bus: InprocBus, store: CheckingStore
) -> None:
    """A task whose step is committed runs nothing; the stored record is adopted."""
    await store.create_run("r-done", wf.name, {"n": 4})
    lease = await store.acquire_lease("r-done", "orch-1", ttl=10)
    record = StepRecord(run_id="r-done", agent="charge", status=StepStatus.SUCCEEDED, output=7)
    assert await store.commit_step(lease, record)
    worker, serving = await serve(bus, store)
    async with BusExecutor(bus, store, poll=1.0) as executor:
        outcome = await asyncio.wait_for(executor.execute(step_call("r-done", lease)), 10)
    worker.stop()
    await serving
    assert (outcome.status, outcome.output) == ("succeeded", 7)
    assert CALLS == []
    assert (worker.stats.duplicates, worker.stats.executed, store.checks) == (1, 0, 1)


async def test_without_the_ability_the_worker_reads_the_run_and_its_steps(
    bus: InprocBus,
) -> None:
    """A store without `SupportsLeaseAndStep`: the same outcomes from `get_run` and `get_steps`."""
    async with PlainStore() as plain:
        await plain.create_run("r-stale", wf.name, {"n": 4})
        current = await plain.acquire_lease("r-stale", "orch-2", ttl=10)
        old = Lease(run_id="r-stale", owner="orch-1", token=current.token - 1, expires_at=0.0)
        worker, serving = await serve(bus, plain)
        async with BusExecutor(bus, plain, poll=1.0) as executor:
            with pytest.raises(StaleLease):
                await asyncio.wait_for(executor.execute(step_call("r-stale", old)), 10)
            reads = (plain.run_reads, plain.step_reads)
            result = await fb.Engine(plain, executor=executor).run(wf, {"n": 4}, run_id="r1")
        worker.stop()
        await serving
    assert min(reads) >= 1  # the worker's check read the run and its steps
    assert result.outputs["receipt"] == 41
    assert (worker.stats.stale, worker.stats.executed, worker.stats.committed) == (1, 2, 2)
    assert plain.checks == 0


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"deadline": "nan"}, "deadline 'nan' is not a time"),  # as JSON has no NaN
        ({"deadline": "inf"}, "deadline 'inf' is not a time"),
        ({"reply_to": "checkwf.receipt"}, "reply_to 'checkwf.receipt' is not a reply queue"),
    ],
)
async def test_a_task_with_a_field_no_orchestrator_writes_is_rejected_unrun(
    bus: InprocBus, store: CheckingStore, change: dict[str, Any], reason: str
) -> None:
    """Its lease valid, its body tampered with: dead-lettered as unreadable, not run (a
    NaN deadline failed the step as a ConfigError; a reply sent to a task queue became a
    task for some worker)."""
    await store.create_run("r-bad", wf.name, {"n": 4})
    lease = await store.acquire_lease("r-bad", "orch-1", ttl=10)
    async with BusExecutor(bus, store, poll=1.0) as executor:
        body = {**executor.encode_task(step_call("r-bad", lease), lease, "t1"), **change}
    await bus.publish("checkwf.charge", body, key="r-bad")
    worker, serving = await serve(bus, store)
    for _ in range(100):
        if worker.stats.dead:
            break
        await asyncio.sleep(0.01)
    worker.stop()
    await serving
    assert (worker.stats.dead, worker.stats.executed) == (1, 0)
    assert CALLS == []
    [letter] = await bus.dead_letters("checkwf.charge")
    assert reason in letter.reason
