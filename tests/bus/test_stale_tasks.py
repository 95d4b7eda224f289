"""A worker checks a task's lease and its step before running it (real Redis store and bus).

The store's wall clock is a `FakeClock` moved by hand, so a lease expires (and another
orchestrator takes the run over) without waiting.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

import firebreak as fb
from firebreak.bus import BusPolicy
from firebreak.bus.redis import RedisBus, RedisConsumer
from firebreak.engine.bus_executor import WORKER_GROUP, BusExecutor, task_queue
from firebreak.engine.executor import StepCall
from firebreak.engine.worker import Worker
from firebreak.errors import StaleLease
from firebreak.store import Lease, StepRecord, StepStatus
from firebreak.store.redis import RedisStore
from firebreak.testing import FakeClock

CALLS: list[str] = []
GATE: dict[str, asyncio.Event] = {}

wf = fb.Workflow("stalewf")


@wf.agent(timeout=5)
async def charge(ctx: fb.Context, run: dict[str, Any]) -> int:
    CALLS.append(ctx.idempotency_key)
    gate = GATE.get(ctx.run_id)
    if gate is not None:
        await gate.wait()
    return int(run["n"]) * 10


SPEC = wf.agents["charge"]
QUEUE = task_queue(wf.name, "charge")


@pytest.fixture
def wall() -> FakeClock:
    return FakeClock(autojump=False)


@pytest.fixture
async def store(redis_url: str, prefix: str, wall: FakeClock) -> AsyncIterator[RedisStore]:
    async with RedisStore(redis_url, prefix=f"{prefix}-store", clock=wall.wall) as opened:
        try:
            yield opened
        finally:
            await opened.destroy()


@pytest.fixture
async def bus(redis_url: str, prefix: str, redis_keys: Any) -> AsyncIterator[RedisBus]:
    CALLS.clear()
    GATE.clear()
    policy = BusPolicy(visibility_timeout=5)
    async with RedisBus(redis_url, prefix=f"{prefix}-bus", policy=policy) as opened:
        yield opened


def step_call(run_id: str, lease: Lease) -> StepCall:
    return StepCall(
        workflow=wf.name,
        spec=SPEC,
        run_id=run_id,
        run_input={"n": 4},
        inputs=SPEC.call_kwargs({"n": 4}, {}),
        lease=lease,
    )


async def leased(store: RedisStore, run_id: str) -> Lease:
    await store.create_run(run_id, wf.name, {"n": 4})
    return await store.acquire_lease(run_id, "orch-1", ttl=10)


async def take_over(store: RedisStore, wall: FakeClock, run_id: str, old: Lease) -> Lease:
    """orch-1's lease expires and orch-2 takes the run over with the next fencing token."""
    wall.advance(11)
    lease = await store.acquire_lease(run_id, "orch-2", ttl=10)
    assert lease.token == old.token + 1
    return lease


async def published(bus: RedisBus, keys: Any) -> None:
    for _ in range(1000):
        if await keys.xlen(bus.stream(QUEUE)):
            return
        await asyncio.sleep(0.01)
    pytest.fail("the task was never published")


async def test_a_task_whose_lease_was_taken_over_is_dropped_before_the_agent_runs(
    bus: RedisBus,
    store: RedisStore,
    wall: FakeClock,
    redis_keys: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """orch-1 publishes a task, then orch-2 takes the run over before a worker reads it:
    the worker reads the run's lease, drops the task without running the agent (acked,
    counted as stale, logged at info) and orch-1's wait ends with `StaleLease`."""
    caplog.set_level(logging.INFO, logger="firebreak.worker")
    old = await leased(store, "r-stale")
    async with BusExecutor(bus, store, poll=1.0) as executor:
        waiting = asyncio.create_task(executor.execute(step_call("r-stale", old)))
        await published(bus, redis_keys)
        await take_over(store, wall, "r-stale", old)
        worker = Worker([wf], bus=bus, store=store, name="w-stale", drain=1.0)
        serving = asyncio.create_task(worker.run())
        with pytest.raises(StaleLease):
            await asyncio.wait_for(waiting, 10)
    worker.stop()
    await serving
    assert CALLS == []
    assert (worker.stats.stale, worker.stats.executed, worker.stats.committed) == (1, 0, 0)
    assert await store.get_steps("r-stale") == {}
    assert await redis_keys.xlen(bus.stream(QUEUE)) == 0  # acked, not left for redelivery
    assert any("stale lease" in r.getMessage() for r in caplog.records)


async def test_a_task_whose_step_is_committed_is_dropped_before_the_agent_runs(
    bus: RedisBus, store: RedisStore, redis_keys: Any
) -> None:
    """A copy of a task whose step is already committed (a redelivery, or a copy sent
    again) runs nothing: the worker replies with the stored record, which the waiting
    orchestrator adopts."""
    lease = await leased(store, "r-done")
    record = StepRecord(run_id="r-done", agent="charge", status=StepStatus.SUCCEEDED, output=7)
    assert await store.commit_step(lease, record)
    async with BusExecutor(bus, store, poll=1.0) as executor:
        worker = Worker([wf], bus=bus, store=store, name="w-done", drain=1.0)
        serving = asyncio.create_task(worker.run())
        outcome = await asyncio.wait_for(executor.execute(step_call("r-done", lease)), 10)
    worker.stop()
    await serving
    assert outcome.status == "succeeded"
    assert outcome.output == 7
    assert CALLS == []
    assert (worker.stats.duplicates, worker.stats.executed) == (1, 0)


async def test_a_takeover_while_the_agent_runs_is_still_refused_at_commit(
    bus: RedisBus, store: RedisStore, wall: FakeClock, redis_keys: Any
) -> None:
    """The check before running is an economy, not the guarantee: a run taken over while
    the agent runs is refused by the fenced commit, and nothing is committed."""
    old = await leased(store, "r-race")
    GATE["r-race"] = gate = asyncio.Event()
    async with BusExecutor(bus, store, poll=1.0) as executor:
        worker = Worker([wf], bus=bus, store=store, name="w-race", drain=1.0)
        serving = asyncio.create_task(worker.run())
        waiting = asyncio.create_task(executor.execute(step_call("r-race", old)))
        for _ in range(1000):
            if CALLS:
                break
            await asyncio.sleep(0.01)
        assert CALLS == ["r-race/charge"]
        await take_over(store, wall, "r-race", old)
        gate.set()
        with pytest.raises(StaleLease):
            await asyncio.wait_for(waiting, 10)
    worker.stop()
    await serving
    assert (worker.stats.stale, worker.stats.executed, worker.stats.committed) == (1, 1, 0)
    assert await store.get_steps("r-race") == {}


async def test_a_first_commit_replies_and_acks_in_the_same_write(
    bus: RedisBus, store: RedisStore, redis_keys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Store and bus on one server: the commit carries the reply and the ack (one script),
    so the bus sends neither; the orchestrator gets the reply and the task is gone."""
    separate: list[str] = []
    for name in ("reply_and_ack", "ack"):
        original = getattr(RedisConsumer, name)

        async def spy(self: RedisConsumer, *args: Any, _f: Any = original, **kw: Any) -> None:
            separate.append(self.group)
            await _f(self, *args, **kw)

        monkeypatch.setattr(RedisConsumer, name, spy)
    lease = await leased(store, "r-one")
    async with BusExecutor(bus, store, poll=1.0) as executor:
        worker = Worker([wf], bus=bus, store=store, name="w-one", drain=1.0)
        serving = asyncio.create_task(worker.run())
        outcome = await asyncio.wait_for(executor.execute(step_call("r-one", lease)), 10)
        # The reply, written in the commit's script, gave the reply stream a time to live.
        ttl = await redis_keys.pttl(bus.stream(executor.reply_queue))
        assert 0 < ttl <= bus.reply_ttl * 1000
    worker.stop()
    await serving
    assert (outcome.status, outcome.output) == ("succeeded", 40)
    assert (worker.stats.executed, worker.stats.committed) == (1, 1)
    assert WORKER_GROUP not in separate  # the worker acked nothing through the bus
    assert await redis_keys.xlen(bus.stream(QUEUE)) == 0


async def test_a_commit_that_finds_the_step_committed_replies_with_the_stored_record(
    bus: RedisBus, store: RedisStore, redis_keys: Any
) -> None:
    """A rival commits the step while the agent runs: the worker's commit (with its reply
    and ack) is a duplicate, so nothing of it is sent; it replies with the stored record
    through the bus and acks, and the orchestrator adopts that record."""
    lease = await leased(store, "r-dup")
    GATE["r-dup"] = gate = asyncio.Event()
    async with BusExecutor(bus, store, poll=1.0) as executor:
        worker = Worker([wf], bus=bus, store=store, name="w-dup", drain=1.0)
        serving = asyncio.create_task(worker.run())
        waiting = asyncio.create_task(executor.execute(step_call("r-dup", lease)))
        for _ in range(1000):
            if CALLS:
                break
            await asyncio.sleep(0.01)
        rival = StepRecord(run_id="r-dup", agent="charge", status=StepStatus.SUCCEEDED, output=7)
        assert await store.commit_step(lease, rival)
        gate.set()
        outcome = await asyncio.wait_for(waiting, 10)
    worker.stop()
    await serving
    assert (outcome.status, outcome.output) == ("succeeded", 7)
    assert (worker.stats.executed, worker.stats.duplicates, worker.stats.committed) == (1, 1, 0)
    assert (await store.get_steps("r-dup"))["charge"].output == 7
    assert await redis_keys.xlen(bus.stream(QUEUE)) == 0  # acked
