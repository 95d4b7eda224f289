"""Contract checks: creating, reading, listing and finishing runs."""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

from firebreak.store.base import CheckpointStore, RunStatus
from firebreak.testing._harness import ConformanceEnv, leased, raises


async def check_store_satisfies_the_protocol(env: ConformanceEnv) -> None:
    """The store is a `CheckpointStore` (every protocol member is present)."""
    assert isinstance(env.store, CheckpointStore)


async def check_create_run_round_trips_and_is_get_or_create(env: ConformanceEnv) -> None:
    """A new run is pending with its input intact; creating it again returns it unchanged."""
    store, wall = env.store, env.wall
    run, created = await store.create_run("r1", "invoice", {"id": 42, "name": "Zoë ✓"})
    assert created
    assert run.status is RunStatus.PENDING
    assert run.input == {"id": 42, "name": "Zoë ✓"}
    assert run.created_at == run.updated_at == wall.wall()
    assert (run.lease_owner, run.lease_token, run.result, run.error) == (None, 0, None, None)
    again, created_again = await store.create_run("r1", "invoice", {"id": 99})
    assert not created_again
    assert again == run
    assert await store.get_run("r1") == run
    assert await store.get_run("nope") is None


async def check_returned_records_are_copies(env: ConformanceEnv) -> None:
    """Mutating the input given or the record returned never changes what is stored."""
    store = env.store
    data = {"items": [1, 2]}
    run, _ = await store.create_run("r1", "wf", data)
    data["items"].append(3)
    run.input["items"].append(4)
    fetched = await store.get_run("r1")
    assert fetched is not None
    assert fetched.input == {"items": [1, 2]}


async def check_non_json_values_are_refused(env: ConformanceEnv) -> None:
    """A value JSON cannot hold raises `TypeError` and stores nothing."""
    store = env.store
    with raises(TypeError):
        await store.create_run("r1", "wf", {"when": object()})
    assert await store.get_run("r1") is None


async def check_list_runs_newest_first_with_filters(env: ConformanceEnv) -> None:
    """`list_runs` is newest first, filters by workflow and status, and honours `limit`."""
    store, wall = env.store, env.wall
    for i in range(5):
        await store.create_run(f"r{i}", "a" if i % 2 == 0 else "b", i)
        wall.advance(1)
    assert [r.run_id for r in await store.list_runs()] == ["r4", "r3", "r2", "r1", "r0"]
    assert [r.run_id for r in await store.list_runs(workflow="b")] == ["r3", "r1"]
    assert [r.run_id for r in await store.list_runs(limit=2)] == ["r4", "r3"]
    lease = await store.acquire_lease("r2", "o", ttl=10)
    await store.set_run_status(lease, RunStatus.FAILED)
    assert [r.run_id for r in await store.list_runs(status="failed")] == ["r2"]
    assert await store.list_runs(workflow="a", status="running") == []


async def check_list_runs_same_timestamp_keeps_creation_order(env: ConformanceEnv) -> None:
    """Runs created at the same instant list newest-created first."""
    store = env.store
    for i in range(3):
        await store.create_run(f"r{i}", "wf", None)
    assert [r.run_id for r in await store.list_runs()] == ["r2", "r1", "r0"]


async def check_set_run_status_stores_outcome(env: ConformanceEnv) -> None:
    """`set_run_status` stores status, result, error and the update time."""
    store, wall = env.store, env.wall
    lease = await leased(store)
    wall.advance(5)
    error = {"type": "Permanent", "message": "no", "attrs": {"code": 7}}
    run = await store.set_run_status(lease, "failed", result={"partial": True}, error=error)
    assert run.status is RunStatus.FAILED
    assert (run.result, run.error, run.updated_at) == ({"partial": True}, error, wall.wall())
    assert await store.get_run("r1") == run


async def check_due_runs_returns_paused_runs_whose_time_came(env: ConformanceEnv) -> None:
    """`due_runs` returns only paused runs whose resume time has come, soonest first."""
    store, wall = env.store, env.wall
    now = wall.wall()
    for run_id, resume in [("late", now + 100), ("soon", now + 10), ("sooner", now + 5)]:
        lease = await leased(store, run_id)
        await store.set_run_status(lease, RunStatus.PAUSED, resume_at=resume)
    lease = await leased(store, "running")
    await store.set_run_status(lease, RunStatus.RUNNING, resume_at=now)
    assert await store.due_runs(now) == []
    assert [r.run_id for r in await store.due_runs(now + 10)] == ["sooner", "soon"]
    assert len(await store.due_runs(now + 1000)) == 3


CHECKS = (
    check_store_satisfies_the_protocol,
    check_create_run_round_trips_and_is_get_or_create,
    check_returned_records_are_copies,
    check_non_json_values_are_refused,
    check_list_runs_newest_first_with_filters,
    check_list_runs_same_timestamp_keeps_creation_order,
    check_set_run_status_stores_outcome,
    check_due_runs_returns_paused_runs_whose_time_came,
)
