"""Contract checks of the optional abilities (`store.base`), for the stores that offer them.

A store without an ability skips its check (`CheckSkipped`): the engine then composes the
same behaviour from the `CheckpointStore` operations. A store with it must agree with
those operations exactly.
"""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

from dataclasses import replace

from firebreak.errors import StaleLease
from firebreak.store.base import (
    SupportsCommitAndFinish,
    SupportsLeaseAndStep,
    SupportsRunIdPrefix,
)
from firebreak.testing._harness import CheckSkipped, ConformanceEnv, leased, raises, step


async def check_lease_and_step_agree_with_run_and_steps(env: ConformanceEnv) -> None:
    """`get_lease_and_step` returns the run's current lease and the agent's committed step.

    No run: nothing. A leased run: its lease, and the step once committed (equal to its
    `get_steps` record). A released lease: none. A later holder: that holder's token.
    """
    store, wall = env.store, env.wall
    if not isinstance(store, SupportsLeaseAndStep):
        raise CheckSkipped("the store does not offer get_lease_and_step (optional)")
    assert await store.get_lease_and_step("ghost", "a") == (None, None)
    lease = await leased(store)
    assert await store.get_lease_and_step("r1", "a") == (lease, None)
    error = {"type": "Overloaded", "message": "shed", "attrs": {"limit": 3}}
    degraded = step(
        "r1",
        "a",
        {"x": [1.5, "é"]},
        status="degraded",
        attempts=3,
        error=error,
        degraded_reason="x",
    )
    assert await store.commit_step(lease, degraded)
    committed = (await store.get_steps("r1"))["a"]
    assert await store.get_lease_and_step("r1", "a") == (lease, committed)
    assert await store.get_lease_and_step("r1", "b") == (lease, None)
    renewed = await store.renew_lease(lease, ttl=60)
    assert await store.get_lease_and_step("r1", "a") == (renewed, committed)
    await store.release_lease(renewed)
    assert await store.get_lease_and_step("r1", "a") == (None, committed)
    second = await store.acquire_lease("r1", "orch-2", ttl=30)
    assert await store.get_lease_and_step("r1", "b") == (second, None)
    wall.advance(31)  # expired: a rival takes the run over with a newer token
    third = await store.acquire_lease("r1", "orch-3", ttl=30)
    assert third.token == second.token + 1
    assert await store.get_lease_and_step("r1", "a") == (third, committed)


async def check_commit_and_finish_agrees_with_commit_then_finish(env: ConformanceEnv) -> None:
    """`commit_step_and_finish` stores what `commit_step` then `finish_run` would.

    A first commit: the same step, and the run finished with the same status and result,
    its lease released. A step committed already: ``False``, nothing changed. A stale
    lease: `StaleLease`, nothing written.
    """
    store, wall = env.store, env.wall
    if not isinstance(store, SupportsCommitAndFinish):
        raise CheckSkipped("the store does not offer commit_step_and_finish (optional)")
    result = {"missing": {"b": "ValueError: x"}, "outputs": {"a": [1, "é"], "b": None}}
    last = {"status": "degraded", "attempts": 2, "degraded_reason": "ValueError: x"}
    runs = {}
    for run_id in ("folded", "composed"):
        lease = await leased(store, run_id)
        assert await store.commit_step(lease, step(run_id, "a", [1, "é"]))
        wall.advance(1)
        if run_id == "folded":
            done = step(run_id, "b", None, **last)
            assert await store.commit_step_and_finish(lease, done, "degraded", result=result)
        else:
            assert await store.commit_step(lease, step(run_id, "b", None, **last))
            await store.finish_run(lease, "degraded", result=result)  # type: ignore[attr-defined]
        run = await store.get_run(run_id)
        steps = await store.get_steps(run_id)
        assert run is not None
        runs[run_id] = (run, steps, lease)
    # The same but for the names and the times (the second run began 1 s later).
    (f_run, f_steps, _), (c_run, c_steps, _) = runs["folded"], runs["composed"]
    shift = c_run.created_at - f_run.created_at
    assert f_run == replace(
        c_run, run_id="folded", created_at=f_run.created_at, updated_at=c_run.updated_at - shift
    )
    assert (f_run.status, f_run.result, f_run.lease_owner) == ("degraded", result, None)
    assert {n: replace(r, run_id="x") for n, r in f_steps.items()} == {
        n: replace(r, run_id="x", completed_at=r.completed_at - shift) for n, r in c_steps.items()
    }
    # A step committed already, and a stale lease: nothing written.
    lease = await leased(store, "dup")
    assert await store.commit_step(lease, step("dup", "a", 1))
    before = await store.get_run("dup"), await store.get_steps("dup")
    again = step("dup", "a", 2)
    assert await store.commit_step_and_finish(lease, again, "succeeded", result={}) is False
    assert (await store.get_run("dup"), await store.get_steps("dup")) == before
    await store.release_lease(lease)
    await store.acquire_lease("dup", "orch-2", ttl=30)
    with raises(StaleLease):
        await store.commit_step_and_finish(lease, step("dup", "b", 1), "succeeded", result={})
    assert set(await store.get_steps("dup")) == {"a"}
    run = await store.get_run("dup")
    assert run is not None
    assert before[0] is not None
    assert (run.status, run.result, run.lease_owner) == (before[0].status, None, "orch-2")


async def check_run_ids_starting_match_literally(env: ConformanceEnv) -> None:
    """`run_ids_starting` finds ids by their start, literally, at most `limit`, in id order.

    Pattern characters (``%``, ``_``, ``*``, ``?``, ``[``) are plain characters of an id.
    """
    store = env.store
    if not isinstance(store, SupportsRunIdPrefix):
        raise CheckSkipped("the store does not offer run_ids_starting (optional)")
    ids = ["ab12", "ab34", "ac", "a", "x%_*?[1]", "x%_z", "é1"]
    for run_id in ids:
        await store.create_run(run_id, "wf", None)
    assert await store.run_ids_starting("ab", limit=5) == ["ab12", "ab34"]
    assert await store.run_ids_starting("ab3") == ["ab34"]
    assert await store.run_ids_starting("a", limit=9) == ["a", "ab12", "ab34", "ac"]
    assert len(await store.run_ids_starting("a")) == 2  # the default limit: 2
    assert await store.run_ids_starting("x%_*?[") == ["x%_*?[1]"]
    assert await store.run_ids_starting("x%_", limit=5) == ["x%_*?[1]", "x%_z"]
    assert await store.run_ids_starting("é") == ["é1"]
    assert await store.run_ids_starting("b") == []
    assert await store.run_ids_starting("ab", limit=0) == []


CHECKS = (
    check_lease_and_step_agree_with_run_and_steps,
    check_commit_and_finish_agrees_with_commit_then_finish,
    check_run_ids_starting_match_literally,
)
