"""Store contract: runs, run status, leases and fencing (every backend)."""

from __future__ import annotations

import pytest
from store_helpers import leased, step

from firebreak.errors import LeaseHeld, StaleLease
from firebreak.store import CheckpointStore, RunStatus
from firebreak.testing import FakeClock


def test_backends_satisfy_the_protocol(store: CheckpointStore) -> None:
    assert isinstance(store, CheckpointStore)


async def test_create_run_round_trips_and_is_get_or_create(
    store: CheckpointStore, wall: FakeClock
) -> None:
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


async def test_returned_records_are_copies(store: CheckpointStore) -> None:
    data = {"items": [1, 2]}
    run, _ = await store.create_run("r1", "wf", data)
    data["items"].append(3)
    run.input["items"].append(4)
    fetched = await store.get_run("r1")
    assert fetched is not None
    assert fetched.input == {"items": [1, 2]}


async def test_non_json_values_are_refused(store: CheckpointStore) -> None:
    with pytest.raises(TypeError):
        await store.create_run("r1", "wf", {"when": object()})
    assert await store.get_run("r1") is None


async def test_list_runs_newest_first_with_filters(store: CheckpointStore, wall: FakeClock) -> None:
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


async def test_list_runs_same_timestamp_keeps_creation_order(store: CheckpointStore) -> None:
    for i in range(3):
        await store.create_run(f"r{i}", "wf", None)
    assert [r.run_id for r in await store.list_runs()] == ["r2", "r1", "r0"]


async def test_set_run_status_stores_outcome(store: CheckpointStore, wall: FakeClock) -> None:
    lease = await leased(store)
    wall.advance(5)
    error = {"type": "Permanent", "message": "no", "attrs": {"code": 7}}
    run = await store.set_run_status(lease, "failed", result={"partial": True}, error=error)
    assert run.status is RunStatus.FAILED
    assert (run.result, run.error, run.updated_at) == ({"partial": True}, error, wall.wall())
    assert await store.get_run("r1") == run


async def test_due_runs_returns_paused_runs_whose_time_came(
    store: CheckpointStore, wall: FakeClock
) -> None:
    now = wall.wall()
    for run_id, resume in [("late", now + 100), ("soon", now + 10), ("sooner", now + 5)]:
        lease = await leased(store, run_id)
        await store.set_run_status(lease, RunStatus.PAUSED, resume_at=resume)
    lease = await leased(store, "running")
    await store.set_run_status(lease, RunStatus.RUNNING, resume_at=now)
    assert await store.due_runs(now) == []
    assert [r.run_id for r in await store.due_runs(now + 10)] == ["sooner", "soon"]
    assert len(await store.due_runs(now + 1000)) == 3


async def test_lease_is_exclusive_until_it_expires(store: CheckpointStore, wall: FakeClock) -> None:
    await store.create_run("r1", "wf", None)
    first = await store.acquire_lease("r1", "orch-1", ttl=30)
    assert (first.owner, first.token, first.expires_at) == ("orch-1", 1, wall.wall() + 30)
    with pytest.raises(LeaseHeld) as held:
        await store.acquire_lease("r1", "orch-2", ttl=30)
    assert (held.value.owner, held.value.expires_at) == ("orch-1", first.expires_at)
    wall.advance(30)  # expiry is exclusive of its instant: now == expires_at means expired
    second = await store.acquire_lease("r1", "orch-2", ttl=30)
    assert second.token == 2
    run = await store.get_run("r1")
    assert run is not None
    assert (run.lease_owner, run.lease_token, run.lease_expires) == ("orch-2", 2, second.expires_at)


async def test_same_owner_reacquires_without_new_token(
    store: CheckpointStore, wall: FakeClock
) -> None:
    first = await leased(store)
    wall.advance(10)
    again = await store.acquire_lease("r1", "orch-1", ttl=30)
    assert again.token == first.token
    assert again.expires_at == wall.wall() + 30
    wall.advance(31)  # expired: even the same owner gets a new token
    assert (await store.acquire_lease("r1", "orch-1", ttl=30)).token == first.token + 1


async def test_stale_token_commit_is_refused(store: CheckpointStore, wall: FakeClock) -> None:
    old = await leased(store)
    wall.advance(31)
    new = await store.acquire_lease("r1", "orch-2", ttl=30)
    with pytest.raises(StaleLease) as stale:
        await store.commit_step(old, step("r1", "a", 1))
    assert (stale.value.run_id, stale.value.token) == ("r1", old.token)
    with pytest.raises(StaleLease):
        await store.set_run_status(old, "succeeded")
    with pytest.raises(StaleLease):
        await store.renew_lease(old, ttl=30)
    assert await store.get_steps("r1") == {}
    assert await store.commit_step(new, step("r1", "a", 2))


async def test_expired_lease_nobody_took_still_writes(
    store: CheckpointStore, wall: FakeClock
) -> None:
    """The token fences writers, not the clock: a slow, unchallenged owner loses nothing."""
    lease = await leased(store)
    wall.advance(100)
    assert await store.commit_step(lease, step("r1", "a"))
    renewed = await store.renew_lease(lease, ttl=30)
    assert (renewed.token, renewed.expires_at) == (lease.token, wall.wall() + 30)


async def test_release_frees_the_run_and_bumps_the_next_token(store: CheckpointStore) -> None:
    lease = await leased(store)
    await store.release_lease(lease)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.lease_owner, run.lease_expires, run.lease_token) == (None, None, 1)
    with pytest.raises(StaleLease):
        await store.commit_step(lease, step("r1", "a"))
    other = await store.acquire_lease("r1", "orch-2", ttl=5)
    assert other.token == 2
    await store.release_lease(lease)  # a lost lease: releasing it is a no-op
    run = await store.get_run("r1")
    assert run is not None
    assert run.lease_owner == "orch-2"


async def test_lease_on_unknown_run_raises_key_error(store: CheckpointStore) -> None:
    with pytest.raises(KeyError):
        await store.acquire_lease("ghost", "o", ttl=1)


async def test_ttl_must_be_positive(store: CheckpointStore) -> None:
    await store.create_run("r1", "wf", None)
    with pytest.raises(ValueError, match="ttl"):
        await store.acquire_lease("r1", "o", ttl=0)
