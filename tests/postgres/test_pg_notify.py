"""LISTEN/NOTIFY: a waiting orchestrator learns of a commit made elsewhere, without polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from firebreak.store import StepRecord, StepStatus
from firebreak.store.postgres import PostgresStore

Make = Callable[..., PostgresStore]


def step(run_id: str, agent: str, output: object = None) -> StepRecord:
    return StepRecord(run_id=run_id, agent=agent, status=StepStatus.SUCCEEDED, output=output)


async def test_a_waiter_wakes_when_another_pool_commits(make_store: Make) -> None:
    async with make_store() as waiter, make_store() as writer:
        await writer.create_run("r1", "wf", 0)
        lease = await writer.acquire_lease("r1", "orch", ttl=30)
        waiting = asyncio.create_task(waiter.wait_for_step("r1", "extract", timeout=10))
        await asyncio.sleep(0.2)  # the waiter is parked on its LISTEN, not polling
        assert not waiting.done()
        await writer.commit_step(lease, step("r1", "other", 0))  # not the awaited step
        await asyncio.sleep(0.1)
        assert not waiting.done()
        started = time.monotonic()
        await writer.commit_step(lease, step("r1", "extract", {"total": 42}))
        found = await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - started < 1.0
        assert found is not None
        assert (found.agent, found.output) == ("extract", {"total": 42})


async def test_an_already_committed_step_returns_at_once(make_store: Make) -> None:
    async with make_store() as store:
        await store.create_run("r1", "wf", 0)
        lease = await store.acquire_lease("r1", "orch", ttl=30)
        await store.commit_step(lease, step("r1", "a", 1))
        found = await store.wait_for_step("r1", "a", timeout=0)
        assert found is not None
        assert found.output == 1


async def test_waiting_times_out_with_none(make_store: Make) -> None:
    async with make_store() as store:
        started = time.monotonic()
        assert await store.wait_for_step("r1", "a", timeout=0.3) is None
        assert 0.25 < time.monotonic() - started < 2


async def test_subscribe_streams_a_runs_step_and_status_events(make_store: Make) -> None:
    async with make_store() as listener, make_store() as writer:
        await writer.create_run("r1", "wf", 0)
        lease = await writer.acquire_lease("r1", "orch", ttl=30)
        seen: list[str] = []
        subscribed = asyncio.Event()

        async def follow() -> None:
            events = listener.subscribe("r1")
            try:
                first = asyncio.ensure_future(anext(events))
                await asyncio.sleep(0.2)
                subscribed.set()
                seen.append(await first)
                async for agent in events:
                    seen.append(agent)
                    if agent == "b":
                        return
            finally:
                await events.aclose()

        task = asyncio.create_task(follow())
        await subscribed.wait()
        await writer.commit_step(lease, step("r1", "a"))
        await writer.set_run_status(lease, "running")
        await writer.commit_step(lease, step("r1", "b"))
        await asyncio.wait_for(task, 5)
        assert [a for a in seen if a] == ["a", "b"]
        assert "" in seen  # the run's status change (and the first-connection resync)
