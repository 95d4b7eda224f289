"""Contract checks that need a second store on the same data: resume, rival orchestrators.

A backend that keeps nothing (`MemoryStore`) skips them: `ConformanceEnv.make_store`
raises `CheckSkipped` before anything is written.
"""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

import asyncio

from firebreak.errors import LeaseHeld, StaleLease, StateConflict
from firebreak.store.base import CheckpointStore
from firebreak.testing._harness import ConformanceEnv, leased, raises, step


async def _snapshot(store: CheckpointStore, dlq_id: str, review_id: str) -> tuple[object, ...]:
    return (
        await store.get_run("r1"),
        await store.get_steps("r1"),
        await store.get_state("r1"),
        await store.dlq_get(dlq_id),
        await store.review_get(review_id),
        await store.list_runs(),
    )


async def check_resume_sees_committed_steps(env: ConformanceEnv) -> None:
    """A store reopened on the same data sees every committed record; the lease survives."""
    reopened = env.make_store()  # first: a backend that keeps nothing skips here
    store, wall = env.store, env.wall
    lease = await leased(store)
    assert await store.commit_step(lease, step("r1", "a", {"v": "ü"}))
    assert await store.commit_step(lease, step("r1", "b", [1, 2], status="degraded"))
    await store.set_run_status(lease, "paused", resume_at=wall.wall() + 9)
    await store.cas_state("r1", 0, {"s": 1})
    dlq_id = await store.dlq_put(run_id="r0", workflow="wf", reason="x", input=[1])
    review_id = await store.review_put(run_id="r1", workflow="wf", agent="c", reason="?")
    before = await _snapshot(store, dlq_id, review_id)
    await store.close()  # the orchestrator goes away; close is idempotent
    async with reopened:
        assert await _snapshot(reopened, dlq_id, review_id) == before
        assert list(await reopened.get_steps("r1")) == ["a", "b"]
        assert [r.run_id for r in await reopened.due_runs(wall.wall() + 9)] == ["r1"]
        # Resuming re-delivers a committed step: refused, and the first result stands.
        assert not await reopened.commit_step(lease, step("r1", "a", "again"))
        assert (await reopened.get_steps("r1"))["a"].output == {"v": "ü"}
        # The lease survived: its holder goes on, a newcomer is refused until it expires.
        assert await reopened.commit_step(lease, step("r1", "c"))
        assert (await reopened.get_steps("r1"))["c"].seq == 3
        with raises(LeaseHeld):
            await reopened.acquire_lease("r1", "orch-2", ttl=30)


async def check_two_stores_fence_each_other(env: ConformanceEnv) -> None:
    """Two orchestrators (two store instances): a lease taken over fences the old owner."""
    async with env.make_store() as other:
        store, wall = env.store, env.wall
        lease = await leased(store)
        with raises(LeaseHeld) as held:
            await other.acquire_lease("r1", "orch-2", ttl=30)
        assert held.value.owner == "orch-1"
        wall.advance(31)
        taken = await other.acquire_lease("r1", "orch-2", ttl=30)
        assert taken.token == lease.token + 1
        with raises(StaleLease):
            await store.commit_step(lease, step("r1", "a", "old"))
        with raises(StaleLease):
            await store.renew_lease(lease, ttl=30)
        assert await other.commit_step(taken, step("r1", "a", "new"))
        assert (await store.get_steps("r1"))["a"].output == "new"
        run = await store.get_run("r1")
        assert run is not None
        assert (run.lease_owner, run.lease_token) == ("orch-2", taken.token)


async def check_two_stores_race_on_commits_and_state(env: ConformanceEnv) -> None:
    """Concurrent commits and CAS through two store instances: exactly one of each wins."""
    async with env.make_store() as other:
        stores = (env.store, other)
        lease = await leased(env.store)
        commits = await asyncio.gather(
            *(stores[i % 2].commit_step(lease, step("r1", "a", i)) for i in range(20))
        )
        assert commits.count(True) == 1
        for store in stores:
            assert (await store.get_steps("r1"))["a"].output == commits.index(True)

        await env.store.cas_state("r1", 0, {"v": -1})

        async def write(i: int) -> int | StateConflict:
            try:
                return await stores[i % 2].cas_state("r1", 1, {"v": i})
            except StateConflict as exc:
                return exc

        results = await asyncio.gather(*(write(i) for i in range(20)))
        winners = [i for i, r in enumerate(results) if r == 2]
        assert len(winners) == 1
        assert all(isinstance(r, StateConflict) and r.actual == 2 for r in results if r != 2)
        for store in stores:
            assert await store.get_state("r1") == (2, {"v": winners[0]})


CHECKS = (
    check_resume_sees_committed_steps,
    check_two_stores_fence_each_other,
    check_two_stores_race_on_commits_and_state,
)
