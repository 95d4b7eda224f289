"""Edges found by an audit: runs that were left "running" for good, a caller cancelled by
another's cancel, resumes after the workflow's code changed, outputs whose type changed
after a crash, shared defaults."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from engine_helpers import BACKENDS, opened
from pydantic import BaseModel

if TYPE_CHECKING:
    from typing import Any as OnlyForTypeCheckers

import firebreak as fb
from firebreak.errors import DefinitionError
from firebreak.events import RunStateChanged, subscribe
from firebreak.store import CheckpointStore, MemoryStore, RunStatus, StepRecord, StepStatus


class Amount(BaseModel):
    value: float


@pytest.mark.parametrize("default", [float("inf"), float("nan"), {1, 2}, {"k": object()}])
def test_a_default_no_checkpoint_can_hold_is_refused_when_defined(default: Any) -> None:
    """It was checkpointed only when the agent degraded: the run raised mid-way and
    stayed "running", out of the dead-letter queue, failing again at every resume."""
    wf = fb.Workflow("wf")
    with pytest.raises(DefinitionError, match="agent 'lookup': default="):

        @wf.agent(critical=False, default=default)
        async def lookup(ctx: fb.Context, x: int) -> Any:
            return x


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_model_output_with_nan_fails_its_step_and_the_run_is_dead_lettered(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("wf")

    @wf.agent(validate=Amount)
    async def measure(ctx: fb.Context, x: int) -> Amount:
        return Amount(value=float("nan"))

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r")
        assert result.status == RunStatus.FAILED
        assert "not a JSON number" in str(result.error)
        assert (await store.get_run("r")).status == RunStatus.FAILED  # type: ignore[union-attr]
        assert await store.dlq_size() == 1


def _cancelled_elsewhere() -> asyncio.Future[None]:
    """A future that another component cancelled (what an agent may await)."""
    future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    future.cancel()
    return future


async def test_an_agent_raising_cancelled_error_fails_its_step_not_the_whole_run() -> None:
    """Nobody cancelled the run: the optional agent degrades, the critical one fails the
    run into the dead-letter queue. It used to cancel its siblings, raise CancelledError
    to a caller nobody cancelled, and leave the run running, to do the same on resume."""
    wf = fb.Workflow("wf")

    @wf.agent(critical=False, default=0)
    async def optional(ctx: fb.Context, x: int) -> int:
        await _cancelled_elsewhere()
        return x

    @wf.agent
    async def sibling(ctx: fb.Context, x: int) -> int:
        await asyncio.sleep(0.01)
        return x + 1

    @wf.agent(after=[optional, sibling])
    async def critical(ctx: fb.Context, optional: int, sibling: int) -> int:
        await _cancelled_elsewhere()
        return optional + sibling

    async with MemoryStore() as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r")
        assert result.status == RunStatus.FAILED
        assert result.failed_agent == "critical"
        assert "raised CancelledError, though nothing cancelled its step" in str(result.error)
        assert result.missing["optional"].startswith("Transient: agent 'optional' raised")
        assert result.outputs["sibling"] == 2
        assert await store.dlq_size() == 1


async def test_a_real_cancel_still_cancels_the_run_and_frees_it_for_a_resume() -> None:
    wf = fb.Workflow("wf")
    started = asyncio.Event()

    @wf.agent
    async def slow(ctx: fb.Context, x: int) -> int:
        started.set()
        await asyncio.sleep(60)
        return x

    async with MemoryStore() as store:
        engine = fb.Engine(store)
        task = asyncio.create_task(engine.run(wf, 1, run_id="r"))
        await started.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert [r.run_id for r in await engine.interrupted()] == ["r"]


async def test_cancelling_one_caller_of_a_run_leaves_the_others_waiting_for_its_result() -> None:
    """Two calls for one run share one drive: cancelling the first cancelled the drive,
    and the second caller, cancelled by nobody, got CancelledError too."""
    wf = fb.Workflow("wf")
    started = asyncio.Event()

    @wf.agent
    async def step(ctx: fb.Context, x: int) -> int:
        started.set()
        await asyncio.sleep(0.05)
        return x * 2

    async with MemoryStore() as store:
        engine = fb.Engine(store)
        first = asyncio.create_task(engine.run(wf, 4, run_id="r"))
        await started.wait()
        second = asyncio.create_task(engine.run(wf, 4, run_id="r"))
        await asyncio.sleep(0)  # the second is waiting on the first's drive
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        result = await second
        assert result.status == RunStatus.SUCCEEDED
        assert result.outputs["step"] == 8


async def test_a_cancelled_drive_says_so_in_an_event() -> None:
    """Whoever follows drives by their events (an OpenTelemetry span, a log) saw it start
    and never end: 200 runs cut off by `asyncio.wait_for` left 200 spans open."""
    wf = fb.Workflow("wf")

    @wf.agent
    async def slow(ctx: fb.Context, x: int) -> int:
        await asyncio.sleep(60)
        return x

    seen: list[RunStateChanged] = []
    unsubscribe = subscribe(lambda e: seen.append(e) if isinstance(e, RunStateChanged) else None)
    try:
        async with MemoryStore() as store:
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(fb.Engine(store).run(wf, 1, run_id="r"), 0.01)
    finally:
        unsubscribe()
    assert [(e.status, e.reason) for e in seen] == [
        ("running", ""),
        ("interrupted", "CancelledError"),
    ]


async def _leased_steps(store: CheckpointStore, run_id: str, steps: list[StepRecord]) -> None:
    """A run left running with these steps committed (its orchestrator died)."""
    await store.create_run(run_id, "wf", 1)
    lease = await store.acquire_lease(run_id, "dead", ttl=30)
    for rec in steps:
        assert await store.commit_step(lease, rec)
    await store.release_lease(lease)


def _rec(agent: str, status: StepStatus, output: Any = None, reason: str | None = None) -> Any:
    return StepRecord(run_id="r", agent=agent, status=status, output=output, degraded_reason=reason)


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_resume_after_a_committed_step_gained_a_dependency_goes_on(
    kind: str, tmp_path: Path
) -> None:
    """v2 of the code makes committed `b` depend on new agent `x`: the resume raised a bare
    KeyError and left the run running."""
    wf = fb.Workflow("wf")

    @wf.agent
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent
    async def x(ctx: fb.Context, input: int) -> int:  # noqa: A002 - the run input
        return 10

    @wf.agent(after=[a, x])
    async def b(ctx: fb.Context, a: int, x: int) -> int:
        return a + x

    @wf.agent(after=[b])
    async def c(ctx: fb.Context, b: int) -> int:
        return b + 1

    async with opened(kind, tmp_path) as store:
        done = [_rec("a", StepStatus.SUCCEEDED, 1), _rec("b", StepStatus.SUCCEEDED, 2)]
        await _leased_steps(store, "r", done)
        result = await fb.Engine(store).resume(wf, "r")
        assert result.status == RunStatus.SUCCEEDED
        assert result.outputs == {"a": 1, "b": 2, "x": 10, "c": 3}  # b stands as committed


@pytest.mark.parametrize("kind", BACKENDS)
async def test_a_run_that_was_failing_still_fails_when_the_failed_agent_left_the_code(
    kind: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopped while compensating, resumed with the failed agent renamed: the run reported
    "succeeded" with `d` skipped and no output for it."""
    undone: list[str] = []
    wf = fb.Workflow("wf")

    async def undo_a(ctx: fb.Context, output: int) -> None:
        undone.append("a")

    @wf.agent(compensate=undo_a)
    async def a(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[a])
    async def renamed(ctx: fb.Context, a: int) -> int:
        return a

    @wf.agent(after=[renamed])
    async def d(ctx: fb.Context, renamed: int) -> int:
        return renamed

    async with opened(kind, tmp_path) as store:
        steps = [
            _rec("a", StepStatus.SUCCEEDED, 1),
            _rec("c", StepStatus.FAILED),
            _rec("d", StepStatus.SKIPPED, reason="c failed"),
        ]
        await _leased_steps(store, "r", steps)
        with caplog.at_level(logging.WARNING, logger="firebreak.engine"):
            result = await fb.Engine(store).resume(wf, "r")
        assert result.status == RunStatus.FAILED
        assert "c failed" in str(result.error)
        assert undone == ["a"]  # the saga still undoes what was done
        assert await store.dlq_size() == 1
        assert "no longer has (c)" in caplog.text


@pytest.mark.parametrize("kind", BACKENDS)
async def test_steps_undone_before_a_crash_are_listed_as_compensated_after_it(
    kind: str, tmp_path: Path
) -> None:
    undone: list[str] = []
    wf = fb.Workflow("wf")

    async def undo(ctx: fb.Context, output: str) -> None:
        undone.append(output)

    @wf.agent(compensate=undo)
    async def a(ctx: fb.Context, x: int) -> str:
        return "a"

    @wf.agent(after=[a], compensate=undo)
    async def b(ctx: fb.Context, a: str) -> str:
        return "b"

    @wf.agent(after=[b])
    async def c(ctx: fb.Context, b: str) -> str:
        raise fb.Permanent("no")

    async with opened(kind, tmp_path) as store:
        await _leased_steps(
            store,
            "r",
            [_rec("a", StepStatus.SUCCEEDED, "a"), _rec("b", StepStatus.SUCCEEDED, "b")],
        )
        lease = await store.acquire_lease("r", "dead", ttl=30)
        assert await store.commit_step(lease, _rec("c", StepStatus.FAILED))
        await store.update_step(lease, "r", "b", status=StepStatus.COMPENSATED)  # then died
        await store.release_lease(lease)
        result = await fb.Engine(store).resume(wf, "r")
        assert undone == ["a"]
        assert result.compensated == ("b", "a")


async def test_an_output_reaches_dependents_as_a_resume_would_give_it() -> None:
    """A model returned with no model to rebuild it was a model on the first drive and a
    dict after a crash: the dependent broke only then. Now it is JSON on every drive,
    and a model wherever `validate=` or the return annotation names one."""
    seen: dict[str, Any] = {}
    wf = fb.Workflow("wf")

    @wf.agent
    async def unnamed(ctx: fb.Context, x: int):  # type: ignore[no-untyped-def]
        return Amount(value=x)

    @wf.agent
    async def annotated(ctx: fb.Context, x: int) -> Amount:
        return Amount(value=x)

    @wf.agent
    async def pair(ctx: fb.Context, x: int) -> Any:
        return (x, x)

    @wf.agent(after=[unnamed, annotated, pair])
    async def use(ctx: fb.Context, unnamed: Any, annotated: Any, pair: Any) -> int:
        seen.update(unnamed=unnamed, annotated=annotated, pair=pair)
        return 0

    async with MemoryStore() as store:
        result = await fb.Engine(store).run(wf, 2, run_id="r")
        assert result.status == RunStatus.SUCCEEDED
        assert seen == {"unnamed": {"value": 2.0}, "annotated": Amount(value=2), "pair": [2, 2]}
        first = dict(seen)
        lease = await store.acquire_lease("r", "o", ttl=30)  # as if `use` had not committed
        await store.reset_steps(lease, ["use"])
        await store.set_run_status(lease, RunStatus.RUNNING)
        await store.release_lease(lease)
        assert (await fb.Engine(store).resume(wf, "r")).status == RunStatus.SUCCEEDED
        assert seen == first


def test_a_return_annotation_that_is_a_model_checks_the_output() -> None:
    wf = fb.Workflow("wf")

    @wf.agent
    async def annotated(ctx: fb.Context, x: int) -> Amount:
        return Amount(value=x)

    assert wf.agents["annotated"].validate is Amount


async def test_each_run_gets_a_copy_of_a_mutable_default() -> None:
    """`default=[]` was one list: each run's dependent appended to the same one."""
    wf = fb.Workflow("wf")

    @wf.agent(critical=False, default=[])
    async def tags(ctx: fb.Context, x: int) -> list[str]:
        raise fb.Permanent("down")

    @wf.agent(after=[tags])
    async def tag(ctx: fb.Context, tags: list[str]) -> int:
        tags.append("seen")
        return len(tags)

    async with MemoryStore() as store:
        engine = fb.Engine(store)
        results = [await engine.run(wf, i, run_id=f"m{i}") for i in range(3)]
    assert [r.outputs["tag"] for r in results] == [1, 1, 1]
    assert wf.agents["tags"].default == []


async def test_an_answer_for_another_workflow_is_refused_before_it_is_recorded() -> None:
    wf = fb.Workflow("orders")

    @wf.agent
    async def ask(ctx: fb.Context, x: int) -> int:
        raise fb.NeedsHuman("which?")

    other = fb.Workflow("billing")

    @other.agent
    async def ask_billing(ctx: fb.Context, x: int) -> int:
        return x

    async with MemoryStore() as store:
        engine = fb.Engine(store)
        result = await engine.run(wf, 1, run_id="r")
        [item] = result.reviews
        with pytest.raises(ValueError, match="question of workflow 'orders', not 'billing'"):
            await engine.resolve_review(item, 5, workflow=other)
        assert (await store.review_get(item)).status == "open"  # type: ignore[union-attr]


def test_after_takes_one_dependency_given_alone() -> None:
    """`after="extract"` named the dependencies 'e', 'x', 't', ...; `after=extract` raised
    a TypeError that named no agent."""
    wf = fb.Workflow("wf")

    @wf.agent
    async def extract(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after="extract")
    async def by_name(ctx: fb.Context, extract: int) -> int:
        return extract

    @wf.agent(after=extract)
    async def by_function(ctx: fb.Context, extract: int) -> int:
        return extract

    assert wf.agents["by_name"].after == wf.agents["by_function"].after == ("extract",)


@pytest.mark.parametrize("critical", ["no", None, 0])
def test_critical_must_be_a_bool(critical: Any) -> None:
    wf = fb.Workflow("wf")
    with pytest.raises(DefinitionError, match="agent 'a': critical must be True or False"):

        @wf.agent(critical=critical, default=0)
        async def a(ctx: fb.Context, x: int) -> int:
            return x


def test_a_blank_workflow_name_is_refused() -> None:
    with pytest.raises(ValueError, match="non-blank name"):
        fb.Workflow(" ")


def test_an_async_event_handler_is_refused() -> None:
    """It was accepted and never ran: each event made a coroutine nobody awaited."""

    async def handler(event: object) -> None:
        pass

    with pytest.raises(TypeError, match="called synchronously"):
        subscribe(handler)


async def test_an_engine_does_not_keep_every_workflow_it_ever_ran() -> None:
    """Workflows built per request (or per tenant) were all kept alive by one engine's
    caches, without bound: about 3.3 KB each for two agents."""
    import gc  # noqa: PLC0415 - this test only

    def build(i: int) -> fb.Workflow:
        wf = fb.Workflow(f"tenant-{i}")

        @wf.agent(bulkhead=2)
        async def a(ctx: fb.Context, x: int) -> int:
            return x

        @wf.agent(after=[a])
        async def b(ctx: fb.Context, a: int) -> int:
            return a

        return wf

    async with MemoryStore() as store:
        engine = fb.Engine(store)
        for i in range(1500):
            assert (await engine.run(build(i), i, run_id=f"r{i}")).status == RunStatus.SUCCEEDED
        gc.collect()
        alive = sum(isinstance(o, fb.Workflow) for o in gc.get_objects())
        assert alive <= 600, alive  # the engine's 256 and the executor's 1,024 agents' worth


async def test_an_orchestrator_that_lost_its_run_cannot_write_its_state() -> None:
    """A's lease expired while its agent ran; B took the run over and finished it; then A's
    agent wrote `booked_by: A` into the finished run's state."""
    now = [1000.0]
    wf = fb.Workflow("wf")
    release = asyncio.Event()

    @wf.agent
    async def book(ctx: fb.Context, who: str) -> str:
        if who == "A":
            await release.wait()  # A is slow: its lease runs out meanwhile
        await ctx.state.update(lambda s: {**s, "booked_by": who})
        return who

    async with MemoryStore(clock=lambda: now[0]) as store:
        engine = fb.Engine(store, lease_ttl=30, owner="A")
        slow = asyncio.create_task(engine.run(wf, "A", run_id="r"))
        await asyncio.sleep(0.01)
        now[0] += 31  # A's lease expired (its renewal timer never got to run)
        lease = await store.acquire_lease("r", "B", ttl=30)  # B takes the run over
        await store.cas_state("r", 0, {"booked_by": "B"}, lease=lease)
        release.set()
        with pytest.raises(fb.StaleLease):  # A hears it lost the run, as at a step commit
            await slow
        assert await store.get_state("r") == (1, {"booked_by": "B"})


def test_a_default_that_does_not_fit_the_agents_model_is_refused_when_defined() -> None:
    """Degraded, it was read back through the model mid-run: a raw ValidationError, and
    the run left running."""
    wf = fb.Workflow("wf")
    with pytest.raises(DefinitionError, match=r"agent 'measure': default=.* does not fit"):

        @wf.agent(critical=False, default={"text": ""})
        async def measure(ctx: fb.Context, x: int) -> Amount:
            return Amount(value=x)


def test_the_return_annotation_rule_holds_when_another_annotation_does_not_resolve() -> None:
    """`typing.get_type_hints` resolved every annotation: one written for type checkers
    only (under TYPE_CHECKING) turned the rule off for that agent alone."""
    wf = fb.Workflow("wf")

    @wf.agent
    async def a(ctx: OnlyForTypeCheckers, x: int) -> Amount:  # type: ignore[name-defined]
        return Amount(value=x)

    assert wf.agents["a"].validate is Amount


async def test_a_dependent_changing_its_input_leaves_the_recorded_result_as_committed() -> None:
    wf = fb.Workflow("wf")

    @wf.agent
    async def extract(ctx: fb.Context, x: int) -> dict[str, Any]:
        return {"amount": x, "lines": [1, 2]}

    @wf.agent(after=[extract])
    async def post(ctx: fb.Context, extract: dict[str, Any]) -> int:
        extract["amount"] = -999  # careless, but the checkpoint's business is not its own
        extract["lines"].append("x")
        return 0

    async with MemoryStore() as store:
        await fb.Engine(store).run(wf, 42, run_id="r")
        record = await store.get_run("r")
        committed = (await store.get_steps("r"))["extract"].output
    assert committed == {"amount": 42, "lines": [1, 2]}
    assert record is not None
    assert record.result["outputs"]["extract"] == committed  # type: ignore[index]


async def test_replay_takes_whole_ids_only() -> None:
    """`inv-4` must not name run `inv-42`: a drop would delete another run's entry."""
    wf = fb.Workflow("wf")

    @wf.agent
    async def fail(ctx: fb.Context, x: int) -> int:
        raise fb.Permanent("no")

    async with MemoryStore() as store:
        engine = fb.Engine(store)
        await engine.run(wf, 1, run_id="inv-42")
        with pytest.raises(fb.RunNotFound):
            await engine.replay("inv-4", wf)
