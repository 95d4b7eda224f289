"""The run's last step shares the finish's fsync (`SupportsUnflushedCommit`), and only it.

A step committed without its own fsync is durable only once a later synced write is, so
the engine may do it only when that write is the run's finish and nothing else runs first:
no other step started after it, no compensation, no review. A spy store records which
commits were unflushed; on SQLite the fsyncs themselves are counted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import firebreak as fb
from firebreak.store import (
    Lease,
    MemoryStore,
    RunStatus,
    SQLiteStore,
    StepRecord,
    SupportsUnflushedCommit,
)


class Spy(MemoryStore):
    """A memory store that offers unflushed commits and records who used them."""

    def __init__(self) -> None:
        super().__init__()
        self.unflushed: list[str] = []

    async def commit_step_unflushed(self, lease: Lease, step: StepRecord) -> bool:
        self.unflushed.append(step.agent)
        return await self.commit_step(lease, step)


def chain() -> fb.Workflow:
    """a -> b -> c, each adding one."""
    wf = fb.Workflow("chain")

    @wf.agent
    async def a(ctx: fb.Context, x: int) -> int:
        return x + 1

    @wf.agent(after=[a])
    async def b(ctx: fb.Context, a: int) -> int:
        return a + 1

    @wf.agent(after=[b])
    async def c(ctx: fb.Context, b: int) -> int:
        return b + 1

    return wf


async def test_only_the_last_step_of_a_chain_skips_its_fsync() -> None:
    wf = chain()
    store = Spy()
    async with store:
        assert isinstance(store, SupportsUnflushedCommit)
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        assert (await store.get_run("r1")).status == RunStatus.SUCCEEDED  # type: ignore[union-attr]
    assert result["c"] == 4
    assert store.unflushed == ["c"]


async def test_of_parallel_branches_only_the_one_that_settles_the_run() -> None:
    wf = fb.Workflow("fan-in")
    release = asyncio.Event()

    @wf.agent
    async def fast(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent
    async def slow(ctx: fb.Context, x: int) -> int:
        await release.wait()
        return x

    @wf.agent
    async def opener(ctx: fb.Context, x: int) -> int:
        release.set()  # `slow` ends only after `fast` and this one have begun
        return x

    store = Spy()
    async with store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
    assert result.status == RunStatus.SUCCEEDED
    assert len(store.unflushed) == 1  # whichever settled last; the two before it synced
    assert store.unflushed[0] in {"fast", "slow", "opener"}


async def test_a_degraded_last_step_may_share_the_finish() -> None:
    wf = fb.Workflow("optional-last")

    @wf.agent
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[a], critical=False, default=0)
    async def enrich(ctx: fb.Context, a: int) -> int:
        raise ConnectionError("down")

    store = Spy()
    async with store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
    assert result.status == RunStatus.DEGRADED
    assert store.unflushed == ["enrich"]


async def test_no_unflushed_commit_when_compensations_or_a_review_come_next() -> None:
    failing = fb.Workflow("fails")
    undone: list[int] = []
    started = asyncio.Event()

    async def undo(ctx: fb.Context, output: int) -> None:
        undone.append(output)

    @failing.agent(compensate=undo)
    async def booked(ctx: fb.Context, x: int) -> int:
        await started.wait()  # still running when `charge` fails: it settles the run last
        await asyncio.sleep(0)
        return x

    @failing.agent
    async def charge(ctx: fb.Context, x: int) -> int:
        started.set()
        raise ValueError("card declined")

    review = fb.Workflow("review")

    @review.agent
    async def extract(ctx: fb.Context, x: int) -> int:
        return x

    @review.agent(after=[extract])
    async def match(ctx: fb.Context, extract: int) -> int:
        raise fb.NeedsHuman("two candidates", suggestions=[1, 2])

    store = Spy()
    async with store:
        engine = fb.Engine(store)
        failed = await engine.run(failing, 1, run_id="r1")
        parked = await engine.run(review, 1, run_id="r2")
    assert failed.status == RunStatus.FAILED
    assert undone == [1]  # `booked` committed, then compensated: its commit was synced
    assert parked.status == RunStatus.NEEDS_REVIEW
    assert store.unflushed == []


async def test_a_run_of_n_steps_costs_n_fsyncs_on_sqlite(tmp_path: Path) -> None:
    """Begin and last step ride on the next synced write: n-1 step commits and the finish."""
    wf = chain()

    async with SQLiteStore(tmp_path / "fb.db", synchronous="FULL") as store:
        writer = store._writer
        assert writer is not None
        before = (writer.transactions, writer.synced)
        result = await fb.Engine(store).run(wf, 7, run_id="r1")
        after = (writer.transactions, writer.synced)
        steps = await store.get_steps("r1")
    assert result["c"] == 10
    assert set(steps) == {"a", "b", "c"}
    assert after[0] - before[0] == 5  # begin, a, b, c, finish
    assert after[1] - before[1] == 3  # a, b, finish
