"""A task the broker loses is sent again; copies are bounded and harmless (real Redis bus).

The orchestrator side runs on a `FakeClock` moved by hand (``autojump=False``): the test
decides when the executor's re-send bound has passed, so nothing sleeps for it. Workers
and the Redis bus run in real time; the test only waits (briefly) for them to act.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import firebreak as fb
from firebreak import Engine, MemoryStore, RunStatus
from firebreak.bus import BusPolicy
from firebreak.bus.redis import RedisBus
from firebreak.engine.bus_executor import BusExecutor, step_budget, task_queue
from firebreak.engine.executor import StepCall
from firebreak.engine.worker import Worker
from firebreak.errors import StaleLease
from firebreak.testing import FakeClock

CALLS: list[str] = []
GATE: dict[str, asyncio.Event] = {}

wf = fb.Workflow("lostwf")


@wf.agent(timeout=2)
async def once(ctx: fb.Context, run: dict[str, Any]) -> int:
    CALLS.append(ctx.idempotency_key)
    gate = GATE.get(ctx.run_id)
    if gate is not None:
        await gate.wait()
    return int(run["n"]) + 1


SPEC = wf.agents["once"]
QUEUE = task_queue(wf.name, "once")


async def until(check: Callable[[], bool | Awaitable[bool]], what: str) -> None:
    """Wait (real time, in short steps) until `check` holds; fail after 10 s."""
    for _ in range(1000):
        held = check()
        if not isinstance(held, bool):
            held = await held
        if held:
            return
        await asyncio.sleep(0.01)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(autojump=False)


@pytest.fixture
async def store(clock: FakeClock) -> AsyncIterator[MemoryStore]:
    async with MemoryStore(clock=clock.wall) as opened:
        yield opened


@pytest.fixture
async def bus(redis_url: str, prefix: str, redis_keys: Any) -> AsyncIterator[RedisBus]:
    CALLS.clear()
    GATE.clear()
    async with RedisBus(redis_url, prefix=prefix, policy=BusPolicy(visibility_timeout=0.9)) as b:
        yield b


async def queued(bus: RedisBus, keys: Any) -> list[Any]:
    """The task stream's entries (queued or held, not yet acked)."""
    return list(await keys.xrange(bus.stream(QUEUE)))


async def published(bus: RedisBus, keys: Any) -> bool:
    return bool(await queued(bus, keys))


async def drained(bus: RedisBus, keys: Any) -> bool:
    return not await queued(bus, keys)


def held_notes(caplog: pytest.LogCaptureFixture) -> int:
    """``held`` notes the executor has read so far (it logs each at DEBUG)."""
    return sum("held by a worker" in r.getMessage() for r in caplog.records)


async def serve(bus: RedisBus, store: MemoryStore) -> tuple[Worker, asyncio.Task[None]]:
    worker = Worker([wf], bus=bus, store=store, name=f"w-{uuid.uuid4().hex[:6]}", drain=1.0)
    return worker, asyncio.create_task(worker.run())


async def stop(worker: Worker, serving: asyncio.Task[None]) -> None:
    """Stop a worker (after its executor closed: the other order can hang a Redis read)."""
    worker.stop()
    await serving


async def test_a_task_the_broker_lost_is_sent_again_and_the_run_completes(
    bus: RedisBus,
    store: MemoryStore,
    clock: FakeClock,
    redis_keys: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The published task vanishes from the stream before any worker reads it (as with a
    broker killed before it wrote the message): once the step's re-send bound passes
    with no commit, the executor logs a warning and sends it again; the run completes with
    the agent run once."""
    caplog.set_level(logging.WARNING, logger="firebreak.engine.bus")
    async with BusExecutor(bus, store, clock=clock, poll=1.0) as executor:
        engine = Engine(store, executor=executor, clock=clock)
        run = asyncio.create_task(engine.run(wf, {"n": 41}, run_id="lost"))
        await until(lambda: published(bus, redis_keys), "the task to be published")
        [(message_id, _)] = await queued(bus, redis_keys)
        assert await redis_keys.xdel(bus.stream(QUEUE), message_id) == 1  # the broker loses it
        worker, serving = await serve(bus, store)
        clock.advance(executor.resend_after(SPEC) + 0.5)
        result = await asyncio.wait_for(run, 10)
    await stop(worker, serving)
    assert result.status == RunStatus.SUCCEEDED
    assert result["once"] == 42
    assert executor.resent == 1
    assert executor.published == 2
    assert (worker.stats.executed, worker.stats.committed, worker.stats.duplicates) == (1, 1, 0)
    assert CALLS == ["lost/once"]
    assert await queued(bus, redis_keys) == []
    assert any("sending it again" in r.getMessage() for r in caplog.records)


async def test_copies_are_bounded_and_a_worker_drops_them_without_running_the_agent(
    bus: RedisBus, store: MemoryStore, clock: FakeClock, redis_keys: Any
) -> None:
    """With no worker, a queued task is sent again at most `resend` times, each copy after
    twice the wait of the one before; once a worker comes, the step runs once and every
    copy is dropped as a duplicate (first commit wins)."""
    async with BusExecutor(bus, store, clock=clock, poll=1.0, resend=3) as executor:
        engine = Engine(store, executor=executor, clock=clock)
        run = asyncio.create_task(engine.run(wf, {"n": 1}, run_id="queued"))
        await until(lambda: published(bus, redis_keys), "the task to be published")
        every = executor.resend_after(SPEC)
        for copy, wait in enumerate([every, 2 * every, 4 * every], start=1):
            clock.advance(wait * 0.9)  # not yet due: nothing is sent
            await asyncio.sleep(0.05)
            assert executor.resent == copy - 1
            clock.advance(wait * 0.1 + 0.01)
            await until(lambda n=copy: executor.resent == n, f"copy {copy}")
        clock.advance(100 * every)  # the bound is spent: no fourth copy
        await asyncio.sleep(0.05)
        assert executor.resent == 3
        assert len(await queued(bus, redis_keys)) == 4
        worker, serving = await serve(bus, store)
        result = await asyncio.wait_for(run, 10)
        await until(lambda: drained(bus, redis_keys), "every copy to be acked")
    await stop(worker, serving)
    assert result.status == RunStatus.SUCCEEDED
    assert CALLS == ["queued/once"]
    assert (worker.stats.executed, worker.stats.committed, worker.stats.duplicates) == (1, 1, 3)


async def test_a_task_a_worker_holds_is_not_sent_again(
    bus: RedisBus,
    store: MemoryStore,
    clock: FakeClock,
    redis_keys: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A step running far past its re-send bound is not duplicated: the worker holding it
    sends ``held`` notes with its touches, and each note postpones the next copy."""
    caplog.set_level(logging.DEBUG, logger="firebreak.engine.bus")
    GATE["slow"] = asyncio.Event()
    async with BusExecutor(bus, store, clock=clock, poll=1.0) as executor:
        engine = Engine(store, executor=executor, clock=clock)
        worker, serving = await serve(bus, store)
        run = asyncio.create_task(engine.run(wf, {"n": 1}, run_id="slow"))
        await until(lambda: CALLS == ["slow/once"], "the agent to start")
        every = executor.resend_after(SPEC)
        for _ in range(4):  # 2.4 times the bound in all
            seen = held_notes(caplog)
            clock.advance(every * 0.6)
            await until(lambda n=seen: held_notes(caplog) > n, "a held note")
        assert executor.resent == 0
        GATE["slow"].set()
        result = await asyncio.wait_for(run, 10)
    await stop(worker, serving)
    assert result.status == RunStatus.SUCCEEDED
    assert executor.resent == 0
    assert CALLS == ["slow/once"]
    assert (worker.stats.executed, worker.stats.duplicates, worker.stats.stale) == (1, 0, 0)


async def test_a_task_of_a_replaced_orchestrator_is_not_sent_again(
    bus: RedisBus, store: MemoryStore, clock: FakeClock, redis_keys: Any
) -> None:
    """Before a copy goes out the executor checks its lease: when another orchestrator took
    the run over, the step ends with `StaleLease` instead of a copy that could not commit."""
    await store.create_run("taken", wf.name, {"n": 1})
    lease = await store.acquire_lease("taken", "orch-1", ttl=5)
    call = StepCall(
        workflow=wf.name,
        spec=SPEC,
        run_id="taken",
        run_input={"n": 1},
        inputs=SPEC.call_kwargs({"n": 1}, {}),
        lease=lease,
    )
    async with BusExecutor(bus, store, clock=clock, poll=1.0) as executor:
        waiting = asyncio.create_task(executor.execute(call))
        await until(lambda: published(bus, redis_keys), "the task to be published")
        clock.advance(10)  # the lease expires; another orchestrator takes the run
        newer = await store.acquire_lease("taken", "orch-2", ttl=5)
        assert newer.token == lease.token + 1
        clock.advance(executor.resend_after(SPEC))
        with pytest.raises(StaleLease):
            await asyncio.wait_for(waiting, 10)
    assert executor.resent == 0


def test_the_step_budget_counts_attempts_backoff_caps_and_fallbacks() -> None:
    """`step_budget`: every attempt's timeout, each retry's longest backoff, one timeout
    per fallback."""

    async def alt(ctx: fb.Context, run: dict[str, Any]) -> int:
        return 0

    flow = fb.Workflow("budget")

    @flow.agent(timeout=3, retry=fb.Retry(attempts=4, base=1.0, cap=3.0), fallbacks=[alt])
    async def step(ctx: fb.Context, run: dict[str, Any]) -> int:
        return 1

    # 4 attempts + 1 fallback at 3 s; backoffs before retries 1..3: min(3, 1, 2, 4) each.
    assert step_budget(flow.agents["step"]) == 3 * 5 + (1 + 2 + 3)
    assert step_budget(SPEC) == 2
