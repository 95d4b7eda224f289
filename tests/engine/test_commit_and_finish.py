"""A run's last step and its finish are one write (`SupportsCommitAndFinish`), and only it.

The engine may fold the run's outcome into a step's commit only when that commit settles
the run: every other agent settled, none failed (compensations would follow), none parked
for review or paused. A spy store records which commits also finished the run; on SQLite
the transactions and fsyncs themselves are counted.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import firebreak as fb
from firebreak.store import (
    JSON,
    Lease,
    MemoryStore,
    RunStatus,
    SQLiteStore,
    StepRecord,
    SupportsCommitAndFinish,
)


class Spy(MemoryStore):
    """A memory store that records which step commits also finished their run."""

    def __init__(self) -> None:
        super().__init__()
        self.folded: list[str] = []

    async def commit_step_and_finish(
        self, lease: Lease, step: StepRecord, status: RunStatus | str, *, result: JSON = None
    ) -> bool:
        self.folded.append(step.agent)
        return await super().commit_step_and_finish(lease, step, status, result=result)


class Plain(MemoryStore):
    """A memory store without the capability (None blocks a protocol member)."""

    commit_step_and_finish = None  # type: ignore[assignment]


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


def optional_last() -> fb.Workflow:
    wf = fb.Workflow("optional-last")

    @wf.agent
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[a], critical=False, default=0)
    async def enrich(ctx: fb.Context, a: int) -> int:
        raise ConnectionError("down")

    return wf


async def test_only_the_last_step_of_a_chain_finishes_the_run() -> None:
    store = Spy()
    async with store:
        assert isinstance(store, SupportsCommitAndFinish)
        result = await fb.Engine(store).run(chain(), 1, run_id="r1")
        run = await store.get_run("r1")
    assert result["c"] == 4
    assert store.folded == ["c"]
    assert run is not None
    assert run.status == RunStatus.SUCCEEDED
    assert run.lease_owner is None  # released in the same write
    assert run.result == {"missing": {}, "reviews": [], "outputs": {"a": 2, "b": 3, "c": 4}}


async def test_the_folded_finish_records_what_the_separate_one_does() -> None:
    """Same run, with and without the capability: the same stored outcome, degraded too."""
    runs = []
    for store in (Spy(), Plain()):
        async with store:
            assert isinstance(store, SupportsCommitAndFinish) == (type(store) is Spy)
            engine = fb.Engine(store)
            for wf, run_id in ((chain(), "ok"), (optional_last(), "degraded")):
                result = await engine.run(wf, 1, run_id=run_id)
                run = await store.get_run(run_id)
                assert run is not None
                runs.append(
                    (result.status, result.missing, run.status, run.result, run.lease_owner)
                )
    assert runs[:2] == runs[2:]
    assert runs[1][0] == runs[1][2] == RunStatus.DEGRADED
    assert runs[1][3]["missing"] == {"enrich": "ConnectionError: down"}
    assert runs[1][3]["outputs"] == {"a": 1, "enrich": 0}


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
    assert len(store.folded) == 1  # whichever settled last
    assert store.folded[0] in {"fast", "slow", "opener"}


async def test_no_fold_when_compensations_or_a_review_come_next() -> None:
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
    assert undone == [1]  # `booked` committed, then compensated
    assert parked.status == RunStatus.NEEDS_REVIEW
    assert store.folded == []


async def test_a_step_committed_first_elsewhere_is_adopted_and_the_run_still_ends() -> None:
    """Another drive committed the last step first: nothing folded, the stored one wins."""
    wf = chain()
    store = MemoryStore()
    async with store:
        real = store.commit_step_and_finish

        async def raced(
            lease: Lease, step: StepRecord, status: RunStatus | str, *, result: JSON = None
        ) -> bool:
            await store.commit_step(lease, StepRecord(**{**vars_of(step), "output": 99}))
            return await real(lease, step, status, result=result)

        store.commit_step_and_finish = raced  # type: ignore[method-assign]
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        run = await store.get_run("r1")
    assert result["c"] == 99
    assert run is not None
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["outputs"]["c"] == 99
    assert run.lease_owner is None


def vars_of(step: StepRecord) -> dict[str, Any]:
    return {f: getattr(step, f) for f in StepRecord.__dataclass_fields__}


async def test_a_run_of_n_steps_costs_n_fsyncs_on_sqlite(tmp_path: Path) -> None:
    """Begin rides on the next synced write; the last step and the finish are one."""
    async with SQLiteStore(tmp_path / "fb.db", synchronous="FULL") as store:
        writer = store._writer
        assert writer is not None
        before = (writer.transactions, writer.synced)
        result = await fb.Engine(store).run(chain(), 7, run_id="r1")
        after = (writer.transactions, writer.synced)
        steps = await store.get_steps("r1")
        run = await store.get_run("r1")
    assert result["c"] == 10
    assert set(steps) == {"a", "b", "c"}
    assert run is not None
    assert run.status == RunStatus.SUCCEEDED
    assert run.result["outputs"] == {"a": 8, "b": 9, "c": 10}
    assert after[0] - before[0] == 4  # begin, a, b, c with the finish
    assert after[1] - before[1] == 3  # a, b, c with the finish
