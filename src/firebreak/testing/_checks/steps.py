"""Contract checks: committing steps exactly once, and the transitions a step may make."""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

import asyncio

from firebreak.errors import StoreError
from firebreak.store.base import StepRecord, StepStatus
from firebreak.testing._harness import ConformanceEnv, leased, raises, step


async def check_commit_step_round_trips(env: ConformanceEnv) -> None:
    """Committed steps read back whole, in commit order, with `seq` and `completed_at`."""
    store, wall = env.store, env.wall
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


async def check_caller_completed_at_is_kept(env: ConformanceEnv) -> None:
    """A `completed_at` given by the caller is stored as given, not re-stamped."""
    lease = await leased(env.store)
    await env.store.commit_step(lease, step("r1", "a", completed_at=123.5))
    assert (await env.store.get_steps("r1"))["a"].completed_at == 123.5


async def check_commit_is_idempotent(env: ConformanceEnv) -> None:
    """A duplicate commit of a step is a no-op that reports it (``False``); the first wins."""
    store = env.store
    lease = await leased(store)
    assert await store.commit_step(lease, step("r1", "a", "first"))
    assert not await store.commit_step(lease, step("r1", "a", "second", status="failed"))
    steps = await store.get_steps("r1")
    assert (steps["a"].output, steps["a"].status, steps["a"].seq) == ("first", "succeeded", 1)


async def check_concurrent_duplicate_commits_exactly_one_wins(env: ConformanceEnv) -> None:
    """Twenty concurrent commits of one step: exactly one reports ``True``, and it is kept."""
    store = env.store
    lease = await leased(store)
    results = await asyncio.gather(
        *(store.commit_step(lease, step("r1", "a", i)) for i in range(20))
    )
    assert results.count(True) == 1
    assert (await store.get_steps("r1"))["a"].output == results.index(True)


async def check_commit_under_another_runs_lease_is_a_bug(env: ConformanceEnv) -> None:
    """Committing a step of run B under run A's lease raises `ValueError` naming the lease."""
    lease = await leased(env.store)
    with raises(ValueError, match="lease"):
        await env.store.commit_step(lease, step("r2", "a"))


async def check_compensation_updates_a_succeeded_step(env: ConformanceEnv) -> None:
    """A succeeded step may become compensation_failed, then compensated; `seq` stays."""
    store = env.store
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


async def check_resolved_review_takes_output_and_next_seq(env: ConformanceEnv) -> None:
    """A resolved review step takes its output, the next `seq` and a fresh `completed_at`."""
    store, wall = env.store, env.wall
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "ask", None, status="needs_review"))
    await store.commit_step(lease, step("r1", "other", 1))
    wall.advance(60)
    resolved = await store.update_step(lease, "r1", "ask", status="succeeded", output="yes")
    assert (resolved.output, resolved.seq, resolved.completed_at) == ("yes", 3, wall.wall())
    assert list(await store.get_steps("r1")) == ["other", "ask"]


async def check_update_step_refuses_bad_transitions_and_unknown_steps(
    env: ConformanceEnv,
) -> None:
    """Moves outside `STEP_TRANSITIONS` raise `StoreError`; an unknown step `KeyError`."""
    store = env.store
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "a"))
    await store.commit_step(lease, step("r1", "f", status="failed"))
    with raises(StoreError, match="cannot go from"):
        await store.update_step(lease, "r1", "a", status="failed")
    with raises(StoreError, match="cannot go from"):
        await store.update_step(lease, "r1", "f", status="succeeded")
    with raises(KeyError):
        await store.update_step(lease, "r1", "ghost", status="compensated")
    assert (await store.get_steps("r1"))["a"].status is StepStatus.SUCCEEDED


async def check_many_concurrent_runs_all_commit(env: ConformanceEnv) -> None:
    """Two hundred runs committing ten steps each at once: every step lands, in order."""
    store = env.store

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


CHECKS = (
    check_commit_step_round_trips,
    check_caller_completed_at_is_kept,
    check_commit_is_idempotent,
    check_concurrent_duplicate_commits_exactly_one_wins,
    check_commit_under_another_runs_lease_is_a_bug,
    check_compensation_updates_a_succeeded_step,
    check_resolved_review_takes_output_and_next_seq,
    check_update_step_refuses_bad_transitions_and_unknown_steps,
    check_many_concurrent_runs_all_commit,
)
