"""`SupportsBeginFinish` (begin_run, finish_run) and `SupportsCommitAndFinish` on every
backend that offers them.

The conformance suite checks the `CheckpointStore` operations; these are the checks of the
optional pair the engine uses to start and end a drive of a run in one write each: memory,
SQLite, Redis (``$FIREBREAK_TEST_REDIS_URL``) and PostgreSQL (``$FIREBREAK_TEST_POSTGRES_URL``),
each server-backed test in a key prefix or schema of its own, destroyed afterwards. An
unreachable server skips (fails under ``CI=true``; see ``tests/servers.py``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firebreak.errors import LeaseHeld, StaleLease
from firebreak.store import (
    CheckpointStore,
    Lease,
    MemoryStore,
    RunStatus,
    SQLiteStore,
    StepRecord,
    SupportsBeginFinish,
    SupportsCommitAndFinish,
)
from servers import require_server

REDIS_URL = os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "FIREBREAK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
T0 = 1_700_000_000.0


class Wall:
    """A wall clock moved by hand: lease expiry without sleeping."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def wall() -> Wall:
    return Wall()


@asynccontextmanager
async def opened(kind: str, tmp_path: Path, wall: Wall) -> AsyncIterator[Any]:
    """A store of `kind` on `wall`'s time; a server's in a prefix or schema of its own."""
    name = f"fbbf_{uuid.uuid4().hex[:16]}"
    store: Any
    if kind == "memory":
        store = MemoryStore(clock=wall)
    elif kind == "sqlite":
        store = SQLiteStore(tmp_path / "runs.db", clock=wall)
    elif kind == "redis":
        require_server("redis", REDIS_URL)
        from firebreak.store.redis import RedisStore  # noqa: PLC0415 - the redis extra

        store = RedisStore(REDIS_URL, prefix=name, clock=wall)
    else:
        require_server("postgres", POSTGRES_URL)
        from firebreak.store.postgres import PostgresStore  # noqa: PLC0415 - the postgres extra

        store = PostgresStore(POSTGRES_URL, schema=name, clock=wall)
    async with store:
        try:
            assert isinstance(store, CheckpointStore)
            yield store
        finally:
            if kind in {"redis", "postgres"}:
                await store.destroy()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path, wall: Wall) -> AsyncIterator[Any]:
    async with opened(request.param, tmp_path, wall) as store:
        assert isinstance(store, SupportsBeginFinish)
        yield store


@pytest.fixture(params=["memory", "sqlite", "redis", "postgres"])
async def folding(request: pytest.FixtureRequest, tmp_path: Path, wall: Wall) -> AsyncIterator[Any]:
    """The stores that offer `SupportsCommitAndFinish`."""
    async with opened(request.param, tmp_path, wall) as store:
        assert isinstance(store, SupportsCommitAndFinish)
        yield store


async def test_begin_creates_leases_and_marks_running(store: Any, wall: Wall) -> None:
    run, created, lease = await store.begin_run("r1", "wf", {"x": 1}, owner="o1", ttl=30.0)
    assert created is True
    assert isinstance(lease, Lease)
    assert (lease.run_id, lease.owner, lease.token) == ("r1", "o1", 1)
    assert lease.expires_at == pytest.approx(T0 + 30.0)
    assert run.run_id == "r1"
    assert run.workflow == "wf"
    assert run.input == {"x": 1}
    assert run.status is RunStatus.RUNNING
    assert (run.lease_owner, run.lease_token) == ("o1", 1)
    assert run.lease_expires == pytest.approx(T0 + 30.0)
    assert run.created_at == pytest.approx(T0)
    assert run.result is None
    assert run.error is None
    stored = await store.get_run("r1")
    assert stored == run
    # The lease is real: the store accepts writes under it.
    step = StepRecord(run_id="r1", agent="a", status="succeeded", output=1)
    assert await store.commit_step(lease, step) is True


async def test_begin_resumes_an_existing_run_without_creating_it(store: Any, wall: Wall) -> None:
    first, created, lease = await store.begin_run("r1", "wf", {"x": 1}, owner="o1", ttl=30.0)
    assert created
    assert lease is not None
    # A paused run (say) resumes: same run, input kept, running again, a new token.
    await store.set_run_status(lease, RunStatus.PAUSED, resume_at=T0 + 5)
    wall.t += 1.0
    run, created, again = await store.begin_run("r1", "wf", {"x": 999}, owner="o1", ttl=30.0)
    assert created is False
    assert again is not None
    assert again.token == lease.token + 1  # re-entry fences the previous driver
    assert run.input == {"x": 1}  # the stored input, not the new one
    assert run.status is RunStatus.RUNNING
    assert run.resume_at is None
    assert run.created_at == pytest.approx(first.created_at)
    assert run.updated_at == pytest.approx(T0 + 1.0)
    assert await store.due_runs(T0 + 100) == []
    with pytest.raises(StaleLease):
        await store.set_run_status(lease, RunStatus.FAILED)


@pytest.mark.parametrize("status", [RunStatus.SUCCEEDED, RunStatus.DEGRADED, RunStatus.FAILED])
async def test_begin_takes_no_lease_on_a_finished_run(
    store: Any, wall: Wall, status: RunStatus
) -> None:
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    await store.finish_run(lease, status, result={"done": True})
    before = await store.get_run("r1")
    run, created, none = await store.begin_run("r1", "wf", 1, owner="o2", ttl=30.0)
    assert created is False
    assert none is None
    assert run.status is status
    assert run.result == {"done": True}
    assert await store.get_run("r1") == before  # untouched: no new token, no owner


async def test_begin_takes_no_lease_on_another_workflows_run(store: Any) -> None:
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    await store.release_lease(lease)
    before = await store.get_run("r1")
    run, created, none = await store.begin_run("r1", "other", 2, owner="o2", ttl=30.0)
    assert created is False
    assert none is None
    assert run.workflow == "wf"
    assert await store.get_run("r1") == before


async def test_begin_raises_lease_held_while_another_owner_holds_it(store: Any, wall: Wall) -> None:
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    wall.t += 10.0
    with pytest.raises(LeaseHeld) as caught:
        await store.begin_run("r1", "wf", 1, owner="o2", ttl=30.0)
    assert caught.value.owner == "o1"
    assert caught.value.expires_at == pytest.approx(T0 + 30.0)
    run = await store.get_run("r1")
    assert (run.lease_owner, run.lease_token) == ("o1", 1)  # nothing changed
    # Once it expires, the other owner takes it over with the next token.
    wall.t = T0 + 31.0
    run, created, taken = await store.begin_run("r1", "wf", 1, owner="o2", ttl=30.0)
    assert created is False
    assert taken is not None
    assert (taken.owner, taken.token) == ("o2", 2)
    assert (run.lease_owner, run.status) == ("o2", RunStatus.RUNNING)


async def test_finish_sets_the_status_and_releases_the_lease(store: Any, wall: Wall) -> None:
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    wall.t += 2.0
    run = await store.finish_run(lease, RunStatus.SUCCEEDED, result={"out": [1, 2]})
    assert run.status is RunStatus.SUCCEEDED
    assert run.result == {"out": [1, 2]}
    assert run.error is None
    assert run.lease_owner is None
    assert run.lease_expires is None
    assert run.lease_token == lease.token  # released, not re-tokened
    assert run.updated_at == pytest.approx(T0 + 2.0)
    assert await store.get_run("r1") == run
    assert [r.run_id for r in await store.list_runs(status="succeeded")] == ["r1"]
    assert await store.list_runs(status="running") == []


async def test_finish_can_pause_with_an_error_and_a_resume_time(store: Any, wall: Wall) -> None:
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    error = {"type": "Boom", "message": "later", "attrs": {}}
    run = await store.finish_run(lease, "paused", error=error, resume_at=T0 + 60)
    assert run.status is RunStatus.PAUSED
    assert run.error == error
    assert run.resume_at == pytest.approx(T0 + 60)
    assert run.lease_owner is None
    assert [r.run_id for r in await store.due_runs(T0 + 60)] == ["r1"]
    # Another owner may take a released run at once.
    _, _, taken = await store.begin_run("r1", "wf", 1, owner="o2", ttl=30.0)
    assert taken is not None
    assert taken.token == lease.token + 1


async def test_finish_refuses_a_stale_lease(store: Any, wall: Wall) -> None:
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    wall.t = T0 + 31.0  # expired, and taken over
    _, _, taken = await store.begin_run("r1", "wf", 1, owner="o2", ttl=30.0)
    assert taken is not None
    with pytest.raises(StaleLease):
        await store.finish_run(lease, RunStatus.FAILED, error={"type": "X", "message": "m"})
    run = await store.get_run("r1")
    assert (run.status, run.lease_owner, run.lease_token) == (RunStatus.RUNNING, "o2", 2)
    # A lease already released by finish_run is stale too: the run is finished.
    await store.finish_run(taken, RunStatus.SUCCEEDED, result=1)
    with pytest.raises(StaleLease):
        await store.finish_run(taken, RunStatus.FAILED)
    assert (await store.get_run("r1")).status is RunStatus.SUCCEEDED


async def test_finish_of_an_unknown_run_is_a_key_error(store: Any) -> None:
    ghost = Lease(run_id="ghost", owner="o1", token=1, expires_at=T0 + 30)
    with pytest.raises(KeyError):
        await store.finish_run(ghost, RunStatus.SUCCEEDED)


async def test_postgres_audits_begin_and_finish_like_the_operations_they_replace(
    store: Any, wall: Wall
) -> None:
    if not hasattr(store, "audit_log"):
        pytest.skip("only PostgresStore keeps an audit trail")
    _, _, lease = await store.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    await store.finish_run(lease, RunStatus.SUCCEEDED, result=2)
    entries = await store.audit_log("r1")
    assert [e["kind"] for e in entries] == [
        "run_created",
        "lease_acquired",
        "run_status",
        "run_status",
        "lease_released",
    ]
    acquired, running, done, released = entries[1:]
    assert acquired["actor"] == "o1"
    assert acquired["what"]["token"] == 1
    assert acquired["what"]["previous"] is None
    assert running["what"]["status"] == "running"
    assert done["what"]["status"] == "succeeded"
    assert done["actor"] == released["actor"] == "o1"
    assert released["what"]["token"] == 1


# -- commit_step_and_finish ----------------------------------------------------------------


async def test_commit_and_finish_records_the_step_and_the_outcome(folding: Any, wall: Wall) -> None:
    _, _, lease = await folding.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    wall.t += 2.0
    step = StepRecord(run_id="r1", agent="last", status="degraded", output=0, degraded_reason="x")
    result = {"missing": {"last": "x"}, "outputs": {"last": 0}}
    assert await folding.commit_step_and_finish(lease, step, "degraded", result=result) is True
    run = await folding.get_run("r1")
    assert run.status is RunStatus.DEGRADED
    assert run.result == result
    assert run.error is None
    assert (run.lease_owner, run.lease_expires) == (None, None)
    assert run.updated_at == pytest.approx(T0 + 2.0)
    stored = (await folding.get_steps("r1"))["last"]
    assert (stored.status, stored.output, stored.degraded_reason) == ("degraded", 0, "x")
    assert [r.run_id for r in await folding.list_runs(status="degraded")] == ["r1"]


async def test_commit_and_finish_of_a_step_committed_already_writes_nothing(folding: Any) -> None:
    _, _, lease = await folding.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    first = StepRecord(run_id="r1", agent="a", status="succeeded", output=1)
    assert await folding.commit_step(lease, first) is True
    before = await folding.get_run("r1")
    again = StepRecord(run_id="r1", agent="a", status="succeeded", output=2)
    assert await folding.commit_step_and_finish(lease, again, "succeeded", result={}) is False
    assert await folding.get_run("r1") == before  # still running, still leased
    assert (await folding.get_steps("r1"))["a"].output == 1  # the first commit stands


async def test_commit_and_finish_under_a_stale_lease_writes_nothing(
    folding: Any, wall: Wall
) -> None:
    _, _, old = await folding.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert old is not None
    wall.t += 31.0
    _, _, new = await folding.begin_run("r1", "wf", 1, owner="o2", ttl=30.0)
    assert new is not None
    step = StepRecord(run_id="r1", agent="a", status="succeeded", output=1)
    with pytest.raises(StaleLease):
        await folding.commit_step_and_finish(old, step, "succeeded", result={})
    with pytest.raises(KeyError):
        gone = Lease(run_id="nope", owner="o1", token=1, expires_at=T0 + 60)
        await folding.commit_step_and_finish(
            gone, StepRecord(run_id="nope", agent="a", status="succeeded"), "succeeded"
        )
    assert await folding.get_steps("r1") == {}
    run = await folding.get_run("r1")
    assert (run.status, run.lease_owner) == (RunStatus.RUNNING, "o2")


async def test_commit_and_finish_refuses_a_result_that_is_not_json(folding: Any) -> None:
    _, _, lease = await folding.begin_run("r1", "wf", 1, owner="o1", ttl=30.0)
    assert lease is not None
    step = StepRecord(run_id="r1", agent="a", status="succeeded", output=1)
    with pytest.raises((TypeError, ValueError)):
        await folding.commit_step_and_finish(lease, step, "succeeded", result={"x": object()})
    assert await folding.get_steps("r1") == {}  # nothing half-written
    assert (await folding.get_run("r1")).status is RunStatus.RUNNING
