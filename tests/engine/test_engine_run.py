"""The orchestrator on the memory and SQLite stores: the happy path, concurrency, resume."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_helpers import BACKENDS, Calls, opened

import firebreak as fb
from firebreak.store import RunStatus, StepStatus

pytestmark = pytest.mark.parametrize("kind", BACKENDS)


def invoice_workflow(calls: Calls) -> fb.Workflow:
    wf = fb.Workflow("invoice", deadline=30)

    @wf.agent(timeout=5)
    async def extract(ctx: fb.Context, invoice: dict[str, int]) -> dict[str, int]:
        calls("extract")
        return {"amount": invoice["amount"]}

    @wf.agent(after=[extract], timeout=5)
    async def validate(ctx: fb.Context, extract: dict[str, int]) -> int:
        calls("validate")
        return extract["amount"]

    @wf.agent(after=[extract], timeout=5)
    async def classify(ctx: fb.Context, extract: dict[str, int]) -> str:
        calls("classify")
        return "small" if extract["amount"] < 100 else "large"

    @wf.agent(after=[validate, classify], timeout=5)
    async def post(ctx: fb.Context, validate: int, classify: str) -> dict[str, object]:
        calls("post")
        return {"posted": validate, "class": classify, "key": ctx.idempotency_key}

    return wf


async def test_a_run_succeeds_with_every_output_and_checkpoint(kind: str, tmp_path: Path) -> None:
    calls = Calls()
    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(invoice_workflow(calls), {"amount": 42}, run_id="r1")
        assert result.status == RunStatus.SUCCEEDED
        assert result.ok
        assert result["post"] == {"posted": 42, "class": "small", "key": "r1/post"}
        assert result.missing == {}
        steps = await store.get_steps("r1")
        assert {name: rec.status for name, rec in steps.items()} == {
            "extract": StepStatus.SUCCEEDED,
            "validate": StepStatus.SUCCEEDED,
            "classify": StepStatus.SUCCEEDED,
            "post": StepStatus.SUCCEEDED,
        }
        assert steps["extract"].seq < steps["validate"].seq < steps["post"].seq
        run = await store.get_run("r1")
        assert run is not None
        assert run.status == RunStatus.SUCCEEDED


async def test_a_finished_run_returns_its_stored_result_without_running(
    kind: str, tmp_path: Path
) -> None:
    calls = Calls()
    wf = invoice_workflow(calls)
    async with opened(kind, tmp_path) as store:
        first = await fb.Engine(store).run(wf, {"amount": 7}, run_id="r1")
        again = await fb.Engine(store).run(wf, {"amount": 999}, run_id="r1")
    assert again.status == RunStatus.SUCCEEDED
    assert again.outputs == first.outputs
    assert again.executed == ()
    assert calls.count("extract") == 1


async def test_independent_branches_run_concurrently(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("fanout")
    both_started = asyncio.Event()
    started: set[str] = set()

    @wf.agent
    async def root(ctx: fb.Context, x: int) -> int:
        return x

    async def branch(name: str) -> str:
        started.add(name)
        if len(started) == 2:
            both_started.set()
        await asyncio.wait_for(both_started.wait(), 2)  # fails unless both run at once
        return name

    @wf.agent(after=[root])
    async def left(ctx: fb.Context, root: int) -> str:
        return await branch("left")

    @wf.agent(after=[root])
    async def right(ctx: fb.Context, root: int) -> str:
        return await branch("right")

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1)
    assert result.status == RunStatus.SUCCEEDED
    assert (result["left"], result["right"]) == ("left", "right")


async def test_resume_continues_from_the_last_committed_step(kind: str, tmp_path: Path) -> None:
    calls = Calls()
    wf = fb.Workflow("chain")
    crash = asyncio.Event()

    @wf.agent
    async def a(ctx: fb.Context, x: int) -> int:
        calls("a")
        return x + 1

    @wf.agent(after=[a])
    async def b(ctx: fb.Context, a: int) -> int:
        calls("b")
        if not crash.is_set():
            crash.set()
            await asyncio.sleep(3600)  # the "crash" happens while b runs
        return a + 1

    @wf.agent(after=[b])
    async def c(ctx: fb.Context, b: int) -> int:
        calls("c")
        return b + 1

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store, owner="orchestrator-1")
        task = asyncio.create_task(engine.run(wf, 1, run_id="r1"))
        await crash.wait()
        task.cancel()  # the orchestrator dies mid-step
        with pytest.raises(asyncio.CancelledError):
            await task
        steps = await store.get_steps("r1")
        assert set(steps) == {"a"}
        result = await fb.Engine(store, owner="orchestrator-1").run(wf, run_id="r1")
    assert result.status == RunStatus.SUCCEEDED
    assert result["c"] == 4
    assert result.resumed
    assert result.executed == ("b", "c")
    assert calls.log == ["a", "b", "b", "c"]  # a never ran again


async def test_unknown_run_without_input_is_a_clear_error(kind: str, tmp_path: Path) -> None:
    async with opened(kind, tmp_path) as store:
        with pytest.raises(KeyError, match="does not exist"):
            await fb.Engine(store).run(invoice_workflow(Calls()), run_id="nope")


async def test_a_workflow_with_no_agents_or_a_blank_run_id_is_refused_unrun(
    kind: str, tmp_path: Path
) -> None:
    """Either would record a run that "succeeded" having done nothing, or one nobody asked
    for (a blank id from a template is not a request for a fresh one)."""
    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        with pytest.raises(fb.DefinitionError, match="workflow 'empty' has no agents"):
            await engine.run(fb.Workflow("empty"), {})
        for blank in ("", "  "):
            with pytest.raises(ValueError, match="run_id must not be blank"):
                await engine.run(invoice_workflow(Calls()), {"amount": 1}, run_id=blank)
        assert await store.list_runs() == []


async def test_a_resume_with_changed_code_names_the_steps_it_ignores(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Steps of agents the workflow lost since the run began: not silently dropped."""
    old, new = fb.Workflow("chg"), fb.Workflow("chg")

    @old.agent
    async def scan(ctx: fb.Context, x: int) -> int:
        return x

    @old.agent(after=[scan], on_exhausted="pause")
    async def book(ctx: fb.Context, scan: int) -> int:
        raise ConnectionError("ledger down")

    @new.agent
    async def ocr(ctx: fb.Context, x: int) -> int:
        return x

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        assert (await engine.run(old, 1, run_id="r1")).status == RunStatus.PAUSED
        with caplog.at_level("WARNING", logger="firebreak.engine"):
            resumed = await engine.run(new, run_id="r1")
    assert resumed.outputs == {"ocr": 1}
    assert "agents workflow 'chg' no longer has (scan)" in caplog.text


async def test_a_run_id_given_again_with_another_input_keeps_its_own_and_says_so(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        first = await engine.run(invoice_workflow(Calls()), {"amount": 1}, run_id="r1")
        with caplog.at_level("WARNING", logger="firebreak.engine"):
            same = await engine.run(invoice_workflow(Calls()), {"amount": 1}, run_id="r1")
            assert caplog.text == ""  # the same input: a plain idempotent call
            other = await engine.run(invoice_workflow(Calls()), {"amount": 9}, run_id="r1")
    assert first.outputs == same.outputs == other.outputs
    assert "run 'r1' exists with another input: its own stands" in caplog.text


async def test_a_run_id_of_another_workflow_is_refused(kind: str, tmp_path: Path) -> None:
    other = fb.Workflow("other")

    @other.agent
    async def only(ctx: fb.Context, x: int) -> int:
        return x

    async with opened(kind, tmp_path) as store:
        await fb.Engine(store).run(other, 1, run_id="r1")
        with pytest.raises(ValueError, match="other"):
            await fb.Engine(store).run(invoice_workflow(Calls()), {"amount": 1}, run_id="r1")


async def test_a_second_orchestrator_on_a_leased_run_is_refused(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("slow")
    entered = asyncio.Event()
    release = asyncio.Event()

    @wf.agent
    async def wait(ctx: fb.Context, x: int) -> int:
        entered.set()
        await release.wait()
        return x

    async with opened(kind, tmp_path) as store:
        first = asyncio.create_task(fb.Engine(store, owner="one").run(wf, 1, run_id="r1"))
        await entered.wait()
        with pytest.raises(fb.LeaseHeld):
            await fb.Engine(store, owner="two").run(wf, run_id="r1")
        release.set()
        assert (await first).status == RunStatus.SUCCEEDED


async def test_a_stale_orchestrator_cannot_commit(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("fenced")
    entered = asyncio.Event()
    release = asyncio.Event()

    @wf.agent
    async def slow(ctx: fb.Context, x: int) -> int:
        entered.set()
        await release.wait()
        return x

    now = [1000.0]
    async with opened(kind, tmp_path, clock=lambda: now[0]) as store:
        old = fb.Engine(store, owner="old", lease_ttl=10)
        stale = asyncio.create_task(old.run(wf, 1, run_id="r1"))
        await entered.wait()
        now[0] += 60  # the old owner's lease expired; a new owner takes the run
        lease = await store.acquire_lease("r1", "new", 30)
        release.set()
        with pytest.raises(fb.StaleLease):
            await stale
        assert await store.get_steps("r1") == {}
        assert lease.token > 1


async def test_runs_beyond_max_in_flight_are_refused_at_once(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("admission")
    gate = asyncio.Event()

    @wf.agent
    async def slow(ctx: fb.Context, x: int) -> int:
        await gate.wait()
        return x

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store, max_in_flight=2)
        held = [asyncio.create_task(engine.run(wf, i, run_id=f"r{i}")) for i in range(2)]
        await asyncio.sleep(0.05)
        with pytest.raises(fb.Overloaded):
            await engine.run(wf, 9, run_id="r9")
        assert await store.get_run("r9") is None  # refused before anything was stored
        gate.set()
        assert [r.status for r in await asyncio.gather(*held)] == [RunStatus.SUCCEEDED] * 2
        assert (await engine.run(wf, 9, run_id="r9")).status == RunStatus.SUCCEEDED
