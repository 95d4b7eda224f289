"""A store that cannot write (disk full): runs stop with `StoreError`, nothing committed
is lost, and each run resumes from its last committed step once there is room again.

The limit is SQLite's own (``PRAGMA max_page_count`` on the store's writing connection):
the very error, ``SQLITE_FULL``, that a full disk gives, on a real file.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from engine_helpers import Calls

import firebreak as fb
from firebreak.errors import StoreError
from firebreak.store import RunStatus, SQLiteStore, StepStatus

BIG = 120_000  # characters per output: a few steps fill the room left


@contextmanager
def full_after(store: SQLiteStore, pages: int) -> Iterator[None]:
    """Let the file grow by `pages` 4 KB pages only, as if the disk then filled up."""
    conn = store._writer._conn  # the one connection that writes
    used = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {used + pages}")
    try:
        yield
    finally:
        conn.execute("PRAGMA max_page_count = 4294967294")


def chain(calls: Calls) -> fb.Workflow:
    wf = fb.Workflow("bulky")

    @wf.agent
    async def fetch(ctx: fb.Context, n: int) -> str:
        calls(f"{ctx.run_id}/fetch")
        return "f" * BIG

    @wf.agent(after=[fetch])
    async def parse(ctx: fb.Context, fetch: str) -> str:
        calls(f"{ctx.run_id}/parse")
        return "p" * BIG

    @wf.agent(after=[parse])
    async def summarize(ctx: fb.Context, parse: str) -> int:
        calls(f"{ctx.run_id}/summarize")
        return len(parse)

    return wf


async def test_a_full_disk_stops_the_run_and_it_resumes_where_it_stopped(tmp_path: Path) -> None:
    calls = Calls()
    wf = chain(calls)
    async with SQLiteStore(tmp_path / "runs.db") as store:
        engine = fb.Engine(store)
        with full_after(store, 40), pytest.raises(StoreError, match="full"):
            await engine.run(wf, 1, run_id="r1")

        run = await store.get_run("r1")
        steps = await store.get_steps("r1")
        assert run is not None
        assert run.status == RunStatus.RUNNING  # not lost, not failed: waiting to resume
        assert run.lease_owner is None  # released: a resume need not wait for it to expire
        assert {k: s.status for k, s in steps.items()} == {"fetch": StepStatus.SUCCEEDED}

        result = await engine.run(wf, 1, run_id="r1")  # room again
    assert result.status == RunStatus.SUCCEEDED
    assert result["summarize"] == BIG
    assert result.executed == ("parse", "summarize")
    assert calls.log == ["r1/fetch", "r1/parse", "r1/parse", "r1/summarize"]


async def test_runs_sharing_a_full_disk_are_told_why_keep_their_steps_and_resume(
    tmp_path: Path,
) -> None:
    calls = Calls()
    wf = chain(calls)
    ids = [f"r{i}" for i in range(6)]
    async with SQLiteStore(tmp_path / "runs.db") as store:
        engine = fb.Engine(store)
        with full_after(store, 150):
            outcomes = await asyncio.gather(
                *(engine.run(wf, 1, run_id=run_id) for run_id in ids), return_exceptions=True
            )
        stopped = [i for i, o in zip(ids, outcomes, strict=True) if isinstance(o, BaseException)]
        assert stopped  # the room was too small for all six
        for outcome in outcomes:  # each is told the cause (not a rollback's own error)
            if isinstance(outcome, BaseException):
                assert isinstance(outcome, StoreError)
                assert "database or disk is full" in str(outcome)
        committed = {run_id: set(await store.get_steps(run_id)) for run_id in ids}
        # The first steps share transactions (group commit): the one that did not fit
        # failed alone, the others committed.
        assert 0 < sum("fetch" in steps for steps in committed.values()) < len(ids)

        for run_id in stopped:
            result = await engine.run(wf, 1, run_id=run_id)
            assert result.status == RunStatus.SUCCEEDED
            assert not committed[run_id] & set(result.executed)  # committed: never again
        for run_id in ids:
            run = await store.get_run(run_id)
            assert run is not None
            assert run.status == RunStatus.SUCCEEDED
            assert (await store.get_steps(run_id)).keys() == {"fetch", "parse", "summarize"}
    for run_id in ids:  # each agent ran once per run, plus at most the one whose commit failed
        runs = [calls.count(f"{run_id}/{agent}") for agent in ("fetch", "parse", "summarize")]
        assert sum(runs) <= 4, (run_id, runs)
        assert all(count >= 1 for count in runs)


async def test_a_failed_run_reaches_the_dead_letter_queue_even_if_the_disk_fills_first(
    tmp_path: Path,
) -> None:
    """The dead letter is written before the run is marked failed: a run stopped between the
    two resumes into the same failure and is dead-lettered, instead of staying "failed"
    with no entry to replay it from (a finished run is never driven again)."""
    wf = fb.Workflow("declined")
    calls = Calls()

    @wf.agent
    async def fetch(ctx: fb.Context, n: int) -> str:
        calls("fetch")
        return "f" * BIG

    @wf.agent(after=[fetch])
    async def charge(ctx: fb.Context, fetch: str) -> str:
        calls("charge")
        raise fb.Permanent("card declined")

    @wf.agent(after=[charge])
    async def ship(ctx: fb.Context, charge: str) -> str:
        return "shipped"

    async with SQLiteStore(tmp_path / "runs.db") as store:
        engine = fb.Engine(store)
        # Room for the step commits, not for the dead letter's copy of fetch's output.
        with full_after(store, 45), pytest.raises(StoreError, match="full"):
            await engine.run(wf, 1, run_id="r1")
        run = await store.get_run("r1")
        assert run is not None
        assert run.status == RunStatus.RUNNING  # not "failed" with nothing in the queue
        assert await store.dlq_of_run("r1") is None

        result = await engine.run(wf, 1, run_id="r1")
        entry = await store.dlq_of_run("r1")
        run = await store.get_run("r1")
    assert result.status == RunStatus.FAILED
    assert result.failed_agent == "charge"
    assert entry is not None
    assert "card declined" in entry.reason
    assert entry.steps is not None
    assert {name: rec.status for name, rec in entry.steps.items()} == {
        "fetch": StepStatus.SUCCEEDED,
        "charge": StepStatus.FAILED,
        "ship": StepStatus.SKIPPED,
    }
    assert run is not None
    assert run.status == RunStatus.FAILED
    assert calls.log == ["fetch", "charge"]  # the resume only finished failing the run


async def test_a_question_for_a_person_is_asked_again_if_the_disk_filled_first(
    tmp_path: Path,
) -> None:
    """A step parked for review is committed, then its review item written: a run stopped
    between the two writes opens the item on its resume, instead of waiting for an answer
    to a question nobody can see."""
    wf = fb.Workflow("ask")
    calls = Calls()

    @wf.agent
    async def fetch(ctx: fb.Context, n: int) -> str:
        calls("fetch")
        return "f" * BIG

    @wf.agent(after=[fetch])
    async def classify(ctx: fb.Context, fetch: str) -> str:
        calls("classify")
        raise fb.NeedsHuman("which category?", suggestions=["invoice", "receipt"])

    @wf.agent(after=[classify])
    async def file(ctx: fb.Context, classify: str) -> str:
        return f"filed as {classify}"

    async with SQLiteStore(tmp_path / "runs.db") as store:
        engine = fb.Engine(store)
        # Room for the step commits, not for the review item's copy of classify's inputs.
        with full_after(store, 45), pytest.raises(StoreError, match="full"):
            await engine.run(wf, 1, run_id="r1")
        assert await store.review_list() == []

        waiting = await engine.run(wf, 1, run_id="r1")
        assert waiting.status == RunStatus.NEEDS_REVIEW
        [item] = await store.review_list()
        assert (item.run_id, item.agent, item.suggestions) == (
            "r1",
            "classify",
            ["invoice", "receipt"],
        )
        assert waiting.reviews == (item.id,)
        assert calls.log == ["fetch", "classify"]  # asked again without running it again

        answered = await engine.resolve_review(item.id, "invoice", workflow=wf)
        run = await store.get_run("r1")
        steps = await store.get_steps("r1")
    assert answered.status == "resolved"
    assert run is not None
    assert run.status == RunStatus.SUCCEEDED
    assert steps["file"].output == "filed as invoice"
