"""Store contract: step commits, step transitions, shared state (every backend)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from store_helpers import leased, step

from firebreak.errors import StateConflict, StoreError
from firebreak.store import CheckpointStore, StepRecord, StepStatus
from firebreak.testing import FakeClock


async def test_commit_step_round_trips(store: CheckpointStore, wall: FakeClock) -> None:
    lease = await leased(store)
    error = {"type": "Overloaded", "message": "shed", "attrs": {"limit": 3}}
    degraded = step(
        "r1", "b", None, status="degraded", attempts=3, error=error, degraded_reason="shed"
    )
    assert await store.commit_step(lease, step("r1", "a", {"x": [1, "é"]}))
    wall.advance(1)
    assert await store.commit_step(lease, degraded)
    steps = await store.get_steps("r1")
    assert list(steps) == ["a", "b"]
    assert steps["a"] == StepRecord(
        run_id="r1",
        agent="a",
        status=StepStatus.SUCCEEDED,
        output={"x": [1, "é"]},
        attempts=1,
        seq=1,
        completed_at=wall.wall() - 1,
    )
    assert steps["b"].seq == 2
    assert steps["b"].status is StepStatus.DEGRADED
    assert (steps["b"].error, steps["b"].degraded_reason, steps["b"].attempts) == (error, "shed", 3)
    assert await store.get_steps("other") == {}


async def test_caller_completed_at_is_kept(store: CheckpointStore) -> None:
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "a", completed_at=123.5))
    assert (await store.get_steps("r1"))["a"].completed_at == 123.5


async def test_duplicate_commit_is_a_noop_and_first_wins(store: CheckpointStore) -> None:
    lease = await leased(store)
    assert await store.commit_step(lease, step("r1", "a", "first"))
    assert not await store.commit_step(lease, step("r1", "a", "second", status="failed"))
    steps = await store.get_steps("r1")
    assert (steps["a"].output, steps["a"].status, steps["a"].seq) == ("first", "succeeded", 1)


async def test_concurrent_duplicate_commits_exactly_one_wins(store: CheckpointStore) -> None:
    lease = await leased(store)
    results = await asyncio.gather(
        *(store.commit_step(lease, step("r1", "a", i)) for i in range(20))
    )
    assert results.count(True) == 1
    assert (await store.get_steps("r1"))["a"].output == results.index(True)


async def test_commit_under_another_runs_lease_is_a_bug(store: CheckpointStore) -> None:
    lease = await leased(store)
    with pytest.raises(ValueError, match="lease"):
        await store.commit_step(lease, step("r2", "a"))


async def test_compensation_updates_a_succeeded_step(store: CheckpointStore) -> None:
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "a", {"entry": 1}))
    failed = await store.update_step(
        lease, "r1", "a", status="compensation_failed", error={"type": "X", "message": "m"}
    )
    assert failed.status is StepStatus.COMPENSATION_FAILED
    assert (failed.output, failed.seq, failed.error) == (
        {"entry": 1},
        1,
        {"type": "X", "message": "m"},
    )
    done = await store.update_step(lease, "r1", "a", status=StepStatus.COMPENSATED)
    assert (done.status, done.error, done.seq) == (StepStatus.COMPENSATED, None, 1)
    assert (await store.get_steps("r1"))["a"] == done


async def test_resolved_review_takes_output_and_next_seq(
    store: CheckpointStore, wall: FakeClock
) -> None:
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "ask", None, status="needs_review"))
    await store.commit_step(lease, step("r1", "other", 1))
    wall.advance(60)
    resolved = await store.update_step(lease, "r1", "ask", status="succeeded", output="yes")
    assert (resolved.output, resolved.seq, resolved.completed_at) == ("yes", 3, wall.wall())
    assert list(await store.get_steps("r1")) == ["other", "ask"]


async def test_update_step_refuses_bad_transitions_and_unknown_steps(
    store: CheckpointStore,
) -> None:
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "a"))
    await store.commit_step(lease, step("r1", "f", status="failed"))
    with pytest.raises(StoreError, match="cannot go from"):
        await store.update_step(lease, "r1", "a", status="failed")
    with pytest.raises(StoreError, match="cannot go from"):
        await store.update_step(lease, "r1", "f", status="succeeded")
    with pytest.raises(KeyError):
        await store.update_step(lease, "r1", "ghost", status="compensated")
    assert (await store.get_steps("r1"))["a"].status is StepStatus.SUCCEEDED


async def test_update_step_is_fenced(store: CheckpointStore, wall: FakeClock) -> None:
    old = await leased(store)
    await store.commit_step(old, step("r1", "a"))
    wall.advance(31)
    await store.acquire_lease("r1", "orch-2", ttl=timedelta(seconds=30))
    with pytest.raises(StoreError):  # StaleLease
        await store.update_step(old, "r1", "a", status="compensated")


async def test_many_concurrent_runs_all_commit(store: CheckpointStore) -> None:
    async def run(i: int) -> None:
        lease = await leased(store, f"run-{i}")
        for j in range(10):
            assert await store.commit_step(lease, step(f"run-{i}", f"agent-{j}", [i, j]))

    await asyncio.gather(*(run(i) for i in range(200)))
    for i in (0, 57, 199):
        steps = await store.get_steps(f"run-{i}")
        assert [s.output for s in steps.values()] == [[i, j] for j in range(10)]
        assert [s.seq for s in steps.values()] == list(range(1, 11))
    assert len(await store.list_runs(limit=1000)) == 200


async def test_shared_state_starts_empty_and_versions(store: CheckpointStore) -> None:
    assert await store.get_state("r1") == (0, {})
    assert await store.cas_state("r1", 0, {"k": "v"}) == 1
    assert await store.cas_state("r1", 1, {"k": "w", "n": [1]}) == 2
    assert await store.get_state("r1") == (2, {"k": "w", "n": [1]})
    with pytest.raises(StateConflict) as conflict:
        await store.cas_state("r1", 1, {"lost": True})
    assert (conflict.value.run_id, conflict.value.expected, conflict.value.actual) == ("r1", 1, 2)
    assert await store.get_state("r1") == (2, {"k": "w", "n": [1]})


async def test_concurrent_cas_exactly_one_writer_wins(store: CheckpointStore) -> None:
    await store.cas_state("r1", 0, {"v": -1})

    async def write(i: int) -> int | StateConflict:
        try:
            return await store.cas_state("r1", 1, {"v": i})
        except StateConflict as exc:
            return exc

    results = await asyncio.gather(*(write(i) for i in range(25)))
    winners = [i for i, r in enumerate(results) if r == 2]
    assert len(winners) == 1
    assert all(isinstance(r, StateConflict) and r.actual == 2 for r in results if r != 2)
    assert await store.get_state("r1") == (2, {"v": winners[0]})
