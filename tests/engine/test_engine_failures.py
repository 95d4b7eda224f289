"""How runs fail, degrade, compensate, pause, wait for review and get replayed."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import pytest
from engine_helpers import BACKENDS, Calls, opened
from pydantic import BaseModel

import firebreak as fb
from firebreak.events import QueueChanged, RunStateChanged
from firebreak.store import RunStatus, StepRecord, StepStatus
from firebreak.testing import capture_events

pytestmark = pytest.mark.parametrize("kind", BACKENDS)


async def test_optional_failure_degrades_and_dependents_are_told(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("degrade")
    seen: dict[str, Any] = {}

    @wf.agent
    async def extract(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[extract], critical=False, default=None)
    async def enrich(ctx: fb.Context, extract: int) -> int:
        raise ConnectionError("enrichment API down")

    @wf.agent(after=[extract, enrich])
    async def report(ctx: fb.Context, extract: int, enrich: int | None) -> str:
        seen.update(ctx.degraded)
        return f"{extract}:{enrich}"

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 5, run_id="r1")
        steps = await store.get_steps("r1")
    assert result.status == RunStatus.DEGRADED
    assert result["report"] == "5:None"
    assert result.missing == {"enrich": "ConnectionError: enrichment API down"}
    assert seen == {"enrich": "ConnectionError: enrichment API down"}
    assert steps["enrich"].status == StepStatus.DEGRADED
    assert steps["enrich"].error is not None
    assert steps["enrich"].error["type"].endswith("ConnectionError")


async def test_critical_failure_skips_dependents_compensates_in_reverse_and_dead_letters(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("saga")
    undone: list[str] = []

    async def undo(ctx: fb.Context, output: str) -> None:
        undone.append(output)

    @wf.agent(compensate=undo)
    async def reserve(ctx: fb.Context, x: int) -> str:
        return "reserve"

    @wf.agent(after=[reserve], compensate=undo)
    async def charge(ctx: fb.Context, reserve: str) -> str:
        return "charge"

    @wf.agent(after=[charge])
    async def ship(ctx: fb.Context, charge: str) -> str:
        raise fb.Permanent("carrier refused the parcel")

    @wf.agent(after=[ship])
    async def notify(ctx: fb.Context, ship: str) -> str:
        return "never"

    async with opened(kind, tmp_path) as store:
        with capture_events() as events:
            result = await fb.Engine(store).run(wf, 1, run_id="r1")
        steps = await store.get_steps("r1")
        dlq = await store.dlq_list()
    assert result.status == RunStatus.FAILED
    assert result.failed_agent == "ship"
    assert undone == ["charge", "reserve"]  # reverse completion order
    assert result.compensated == ("charge", "reserve")
    assert steps["notify"].status == StepStatus.SKIPPED
    assert steps["ship"].status == StepStatus.FAILED
    assert steps["charge"].status == StepStatus.COMPENSATED
    assert [entry.run_id for entry in dlq] == ["r1"]
    assert "carrier refused" in dlq[0].reason
    assert dlq[0].input == 1
    assert any(isinstance(e, QueueChanged) and e.queue == "dlq" for e in events)
    assert any(isinstance(e, RunStateChanged) and e.status == "failed" for e in events)


async def test_a_failing_compensation_is_recorded_and_the_others_still_run(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("saga2")
    undone: list[str] = []

    async def undo_ok(ctx: fb.Context, output: str) -> None:
        undone.append(output)

    async def undo_broken(ctx: fb.Context, output: str) -> None:
        raise RuntimeError("refund API down")

    @wf.agent(compensate=undo_ok)
    async def first(ctx: fb.Context, x: int) -> str:
        return "first"

    @wf.agent(after=[first], compensate=undo_broken)
    async def second(ctx: fb.Context, first: str) -> str:
        return "second"

    @wf.agent(after=[second])
    async def third(ctx: fb.Context, second: str) -> str:
        raise fb.Permanent("no")

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        steps = await store.get_steps("r1")
    assert result.status == RunStatus.FAILED
    assert undone == ["first"]
    assert result.compensated == ("first",)
    assert steps["second"].status == StepStatus.COMPENSATION_FAILED
    assert "refund API down" in steps["second"].error["message"]  # type: ignore[index]


async def test_a_compensation_has_an_idempotency_key_of_its_own(kind: str, tmp_path: Path) -> None:
    """A refund is not the charge: a payment API that saw ``r1/charge`` for the charge would
    refuse (or replay) a refund sent under the same key."""
    wf = fb.Workflow("keys")
    keys: list[str] = []

    async def refund(ctx: fb.Context, output: str) -> None:
        keys.append(ctx.idempotency_key)

    @wf.agent(compensate=refund)
    async def charge(ctx: fb.Context, x: int) -> str:
        keys.append(ctx.idempotency_key)
        return "ch_1"

    @wf.agent(after=[charge])
    async def ship(ctx: fb.Context, charge: str) -> str:
        raise fb.Permanent("no stock")

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
    assert result.compensated == ("charge",)
    assert keys == ["r1/charge", "r1/charge/compensate"]


async def test_invalid_input_is_dead_lettered_before_any_agent_runs(
    kind: str, tmp_path: Path
) -> None:
    class Invoice(BaseModel):
        id: int
        amount: float

    calls = Calls()
    wf = fb.Workflow("typed", input=Invoice)

    @wf.agent
    async def extract(ctx: fb.Context, invoice: Invoice) -> float:
        calls("extract")
        return invoice.amount

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        bad = await engine.run(wf, {"id": "not-a-number"}, run_id="bad")
        good = await engine.run(wf, {"id": 1, "amount": 9.5}, run_id="good")
        dlq = await store.dlq_list()
    assert bad.status == RunStatus.FAILED
    assert bad.error is not None
    assert "InvalidInput" in bad.error["type"]
    # Which fields, and what is wrong with each, on the one line `runs` and `dlq` show.
    assert bad.error["message"] == (
        "invalid input: workflow 'typed': 2 validation errors for Invoice: "
        "id: Input should be a valid integer, unable to parse string as an integer; "
        "amount: Field required"
    )
    assert calls.log == ["extract"]  # only the good run's
    assert good["extract"] == 9.5
    assert [(e.run_id, e.input) for e in dlq] == [("bad", {"id": "not-a-number"})]


async def test_invalid_output_runs_the_fallbacks_not_a_retry(kind: str, tmp_path: Path) -> None:
    class Amount(BaseModel):
        value: float

    calls = Calls()
    wf = fb.Workflow("validated")

    async def backup_model(ctx: fb.Context, text: str) -> dict[str, float]:
        calls("backup")
        return {"value": 12.5}

    @wf.agent(validate=Amount, retry=fb.Retry(attempts=3, base=0), fallbacks=[backup_model])
    async def parse(ctx: fb.Context, text: str) -> dict[str, str]:
        calls("primary")
        return {"value": "twelve and a half"}

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, "12.5 EUR", run_id="r1")
        again = await fb.Engine(store).run(wf, run_id="r1")
    assert calls.log == ["primary", "backup"]
    assert result["parse"] == Amount(value=12.5)
    assert again["parse"] == Amount(value=12.5)  # rebuilt from the checkpoint


async def test_a_callable_validate_is_a_predicate_a_check_or_a_converter(
    kind: str, tmp_path: Path
) -> None:
    """False rejects the output, True or None keeps it, another value replaces it."""
    wf = fb.Workflow("checked")

    def must_be_int(value: object) -> None:
        if not isinstance(value, int):
            raise TypeError("not an int")

    @wf.agent(validate=lambda v: isinstance(v, int))
    async def predicate(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(validate=must_be_int)
    async def check(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(validate=str)
    async def convert(ctx: fb.Context, x: int) -> str:
        return x  # type: ignore[return-value]

    @wf.agent(validate=lambda v: v > 100, critical=False, default=-1)
    async def too_small(ctx: fb.Context, x: int) -> int:
        return x

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 5, run_id="r1")
    assert result.outputs == {"predicate": 5, "check": 5, "convert": "5", "too_small": -1}
    reason = "InvalidOutput: invalid output: agent 'too_small': the check returned False"
    assert result.missing == {"too_small": reason}


async def test_a_run_rejected_for_its_input_is_replayed_only_with_a_new_one(
    kind: str, tmp_path: Path
) -> None:
    """Replaying it on the stored input would fail again (or, for an input no store could
    keep, run on a stand-in): refused, and the entry stays where it is."""

    class Invoice(BaseModel):
        amount: int

    typed, loose = fb.Workflow("typed", input=Invoice), fb.Workflow("loose")

    @typed.agent
    async def book(ctx: fb.Context, invoice: Invoice) -> int:
        return invoice.amount

    @loose.agent
    async def echo(ctx: fb.Context, x: Any) -> Any:
        return x

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        assert (await engine.run(typed, {"amount": "ten"}, run_id="bad")).status == "failed"
        unstorable = await engine.run(loose, {1, 2}, run_id="set")
        assert unstorable.error is not None
        assert unstorable.error["type"].endswith(".InvalidInput")
        for run_id, workflow in (("bad", typed), ("set", loose)):
            with pytest.raises(fb.InvalidInput, match="replay it with a corrected input"):
                await engine.replay(run_id, workflow)
            run = await store.get_run(run_id)
            assert run is not None
            assert run.status == RunStatus.FAILED
        assert [e.run_id for e in await store.dlq_list()] == ["bad", "set"]
        fixed = await engine.replay("bad", typed, input={"amount": 10})
        assert fixed["book"] == 10
        assert [e.run_id for e in await store.dlq_list()] == ["set"]


async def test_a_step_its_bulkhead_sheds_fails_or_degrades_and_runs_no_fallback(
    kind: str, tmp_path: Path
) -> None:
    """Under saturation the bulkhead sheds at once (no queue). It bounds the agent with its
    fallbacks (other, often slower, ways of doing the same work): a shed critical step
    fails with `Overloaded`, an optional one degrades; no fallback runs unbounded."""
    held = asyncio.Event()
    release = asyncio.Event()
    backups: list[int] = []

    async def backup(ctx: fb.Context, x: int) -> str:
        backups.append(x)
        return "backup"

    def workflow(name: str, *, critical: bool) -> fb.Workflow:
        wf = fb.Workflow(name)

        optional: dict[str, Any] = {} if critical else {"critical": False, "default": "none"}

        @wf.agent(bulkhead=1, fallbacks=[backup], **optional)
        async def work(ctx: fb.Context, x: int) -> str:
            held.set()
            await release.wait()
            return "primary"

        return wf

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        for wf in (workflow("critical", critical=True), workflow("optional", critical=False)):
            held.clear()
            release.clear()
            first = asyncio.create_task(engine.run(wf, 1, run_id=f"{wf.name}-1"))
            await held.wait()  # the one slot is taken
            shed = await engine.run(wf, 2, run_id=f"{wf.name}-2")
            release.set()
            assert (await first)["work"] == "primary"
            if wf.name == "critical":
                assert shed.status == RunStatus.FAILED
                assert shed.error is not None
                assert shed.error["type"].endswith(".Overloaded")
            else:
                assert shed.status == RunStatus.DEGRADED
                assert shed["work"] == "none"
                assert shed.missing["work"].startswith("Overloaded")
    assert backups == []


async def test_transient_errors_are_retried_then_succeed(kind: str, tmp_path: Path) -> None:
    attempts: list[int] = []
    wf = fb.Workflow("flaky")

    @wf.agent(retry=fb.Retry(attempts=3, base=0.001, cap=0.001))
    async def call_llm(ctx: fb.Context, prompt: str) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < 3:
            raise TimeoutError("model slow")
        return prompt.upper()

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, "hi", run_id="r1")
        steps = await store.get_steps("r1")
    assert result["call_llm"] == "HI"
    assert attempts == [1, 2, 3]
    assert steps["call_llm"].attempts == 3


async def test_an_output_that_cannot_be_checkpointed_fails_the_step_clearly(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("unstorable")

    @wf.agent
    async def make(ctx: fb.Context, x: int) -> object:
        return object()

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert "cannot be checkpointed" in result.error["message"]


@pytest.mark.parametrize(
    "output",
    ["cut pair \ud800 here", {"k": ["ok", "\udc80"]}, {"key \udfff": 1}],
    ids=["text", "nested", "key"],
)
async def test_text_with_a_lone_surrogate_fails_the_step_on_every_store_alike(
    kind: str, tmp_path: Path, output: object
) -> None:
    """Not UTF-8: SQLite's write raised UnicodeEncodeError out of the drive (the run was
    left running, failing again at every resume) while the memory store kept it."""
    wf = fb.Workflow("surrogate")

    @wf.agent
    async def make(ctx: fb.Context, x: int) -> object:
        return output

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        dead = await store.dlq_list()
    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert "lone surrogate" in result.error["message"]
    assert [entry.run_id for entry in dead] == ["r1"]


async def test_a_lone_surrogate_in_error_text_is_recorded_escaped_on_every_store(
    kind: str, tmp_path: Path
) -> None:
    """An error about a file name decoded with surrogateescape: SQLite refused its text,
    so the failure could not be recorded and the run stayed running."""
    wf = fb.Workflow("surrogate-error")

    @wf.agent(critical=False, default=0)
    async def lookup(ctx: fb.Context, x: int) -> int:
        raise fb.Permanent("file b'\\xff' is \udcff: not found")

    @wf.agent(after="lookup")
    async def ask(ctx: fb.Context, lookup: int) -> int:
        raise fb.NeedsHuman("which \udcff file?", suggestions=["a\udcffb"])

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        reviews = await store.review_list()
    assert result.status == RunStatus.NEEDS_REVIEW
    assert "\\udcff: not found" in result.missing["lookup"]  # escaped, readable
    # A suggestion no store can keep is kept as its repr, for people to read.
    assert [item.suggestions for item in reviews] == [["'a\\udcffb'"]]
    assert "\\udcff" in reviews[0].reason


async def test_shared_state_with_a_lone_surrogate_is_refused_on_every_store(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("surrogate-state")

    @wf.agent
    async def write(ctx: fb.Context, x: int) -> int:
        await ctx.state.set({"name": "\ud800"}, version=0)
        return x

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        state = await store.get_state("r1")
    assert result.status == RunStatus.FAILED
    assert result.error is not None
    assert "shared state: text with a lone surrogate" in result.error["message"]
    assert state == (0, {})


async def test_a_run_input_with_a_lone_surrogate_is_rejected_and_dead_lettered(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("surrogate-input")

    @wf.agent
    async def echo(ctx: fb.Context, x: str) -> str:
        return x

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, "bad \ud800", run_id="r1")
        dead = await store.dlq_list()
    assert result.status == RunStatus.FAILED
    assert result.executed == ()
    assert [entry.run_id for entry in dead] == ["r1"]
    assert "lone surrogate" in dead[0].reason


async def test_needs_human_parks_the_step_and_resolve_continues_the_run(
    kind: str, tmp_path: Path
) -> None:
    wf = fb.Workflow("review")
    calls = Calls()

    @wf.agent
    async def extract(ctx: fb.Context, x: str) -> str:
        calls("extract")
        return x

    @wf.agent(after=[extract])
    async def match_po(ctx: fb.Context, extract: str) -> str:
        calls("match_po")
        raise fb.NeedsHuman("two POs match", suggestions=["PO-1", "PO-2"])

    @wf.agent(after=[match_po])
    async def post(ctx: fb.Context, match_po: str) -> str:
        calls("post")
        return f"posted against {match_po}"

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        parked = await engine.run(wf, "inv", run_id="r1")
        assert parked.status == RunStatus.NEEDS_REVIEW
        [item] = await store.review_list()
        assert (item.agent, item.suggestions) == ("match_po", ["PO-1", "PO-2"])
        assert parked.reviews == (item.id,)
        still = await engine.run(wf, run_id="r1")  # nothing resolved yet: nothing runs
        assert still.status == RunStatus.NEEDS_REVIEW
        await engine.resolve_review(item.id, "PO-2", workflow=wf)
        done = await engine.run(wf, run_id="r1")
        assert await store.review_list() == []
    assert done.status == RunStatus.SUCCEEDED
    assert done["post"] == "posted against PO-2"
    assert calls.log == ["extract", "match_po", "post"]


async def test_transient_outage_pauses_the_run_and_due_resume_finishes_it(
    kind: str, tmp_path: Path
) -> None:
    now = [1000.0]
    up = [False]
    wf = fb.Workflow("pause")
    calls = Calls()

    @wf.agent
    async def extract(ctx: fb.Context, x: int) -> int:
        calls("extract")
        return x

    @wf.agent(after=[extract], on_exhausted="pause")
    async def ocr(ctx: fb.Context, extract: int) -> int:
        calls("ocr")
        if not up[0]:
            raise ConnectionError("OCR service down")
        return extract * 2

    async with opened(kind, tmp_path, clock=lambda: now[0]) as store:
        engine = fb.Engine(store, pause_for=300)
        paused = await engine.run(wf, 21, run_id="r1")
        assert paused.status == RunStatus.PAUSED
        assert paused.resume_at == 1300
        # What paused it, where, after how many attempts: in the result and the record.
        record = await store.get_run("r1")
        assert record is not None
        for error in (paused.error, record.error):
            assert error is not None
            assert (error["agent"], error["attempts"]) == ("ocr", 1)
            assert error["message"] == "OCR service down"
        assert await engine.resume_due({"pause": wf}) == []  # not due yet
        now[0] += 301
        up[0] = True
        [resumed] = await engine.resume_due({"pause": wf})
        after = await store.get_run("r1")
    assert resumed.status == RunStatus.SUCCEEDED
    assert resumed.error is None
    assert after is not None
    assert after.error is None  # a run that went on is not marked with the old outage
    assert resumed["ocr"] == 42
    assert calls.log == ["extract", "ocr", "ocr"]


async def test_resume_due_finds_the_runs_whose_orchestrator_stopped(
    kind: str, tmp_path: Path
) -> None:
    """Interrupted runs are found without their ids: one whose drive gave up (cancelled),
    one whose orchestrator died holding its lease (once it expires), one created but never
    leased (a lease's time later); never one a live orchestrator drives."""
    now = [1000.0]
    wf = fb.Workflow("sweep")
    calls = Calls()
    go_on = asyncio.Event()  # until set, `check` hangs: the drive is stopped in the middle
    entered = collections.defaultdict(asyncio.Event)  # run id -> its `check` has started

    @wf.agent
    async def fetch(ctx: fb.Context, x: int) -> int:
        calls(f"{ctx.run_id}/fetch")
        return x

    @wf.agent(after=[fetch])
    async def check(ctx: fb.Context, fetch: int) -> int:
        calls(f"{ctx.run_id}/check")
        entered[ctx.run_id].set()
        await go_on.wait()
        return fetch + 1

    async def running(engine: fb.Engine, run_id: str) -> asyncio.Task[fb.RunResult]:
        task = asyncio.create_task(engine.run(wf, 1, run_id=run_id))
        await entered[run_id].wait()
        return task

    async with opened(kind, tmp_path, clock=lambda: now[0]) as store:
        sweeper, live = fb.Engine(store, lease_ttl=30), fb.Engine(store, lease_ttl=30)
        gave_up = await running(sweeper, "gave-up")
        gave_up.cancel()  # the drive stops and gives its lease up
        with pytest.raises(asyncio.CancelledError):
            await gave_up
        await store.create_run("died", "sweep", 1)  # an orchestrator that died mid-run:
        lease = await store.acquire_lease("died", "dead-owner", 30)  # its lease stays
        await store.set_run_status(lease, RunStatus.RUNNING)
        await store.commit_step(
            lease,
            StepRecord(run_id="died", agent="fetch", status=StepStatus.SUCCEEDED, output=1),
        )
        await store.create_run("never-leased", "sweep", 1)
        driven = await running(live, "driven")

        assert [r.run_id for r in await sweeper.interrupted()] == ["gave-up"]
        assert "driven" not in {r.run_id for r in await live.interrupted()}
        driven.cancel()  # its orchestrator gives up too
        with pytest.raises(asyncio.CancelledError):
            await driven

        now[0] += 31  # the dead owner's lease has expired; the pending run is old enough
        found = {r.run_id for r in await sweeper.interrupted()}
        assert found == {"gave-up", "died", "never-leased", "driven"}
        go_on.set()
        results = await sweeper.resume_due({"sweep": wf})
        assert await sweeper.interrupted() == []
    assert {r.run_id: r.status for r in results} == dict.fromkeys(found, RunStatus.SUCCEEDED)
    for run_id in ("gave-up", "died", "driven"):  # committed before the stop: not again
        assert calls.count(f"{run_id}/fetch") == (0 if run_id == "died" else 1)
    assert calls.count("never-leased/fetch") == 1


async def test_resume_due_resumes_many_runs_at_once_within_its_bound(
    kind: str, tmp_path: Path
) -> None:
    now = [1000.0]
    wf = fb.Workflow("many")
    active, peak = [0], [0]

    @wf.agent
    async def work(ctx: fb.Context, x: int) -> int:
        active[0] += 1
        peak[0] = max(peak[0], active[0])
        await asyncio.sleep(0.01)
        active[0] -= 1
        return x

    async with opened(kind, tmp_path, clock=lambda: now[0]) as store:
        for i in range(6):  # created, never leased: their orchestrator died at once
            await store.create_run(f"r{i}", "many", i)
        now[0] += 60
        engine = fb.Engine(store, lease_ttl=30)
        with pytest.raises(ValueError, match="concurrency"):
            await engine.resume_due({"many": wf}, concurrency=0)
        results = await engine.resume_due({"many": wf}, concurrency=3)
    assert sorted(r.run_id for r in results) == [f"r{i}" for i in range(6)]
    assert {r.status for r in results} == {RunStatus.SUCCEEDED}
    assert peak[0] == 3  # three at a time: not one after another, not all six


async def test_two_sweeps_at_once_resume_each_run_once(kind: str, tmp_path: Path) -> None:
    """Two `resume --due` overlapping (cron, two hosts): each run is driven by one of them,
    its agent called once, and reported by that one only."""
    now = [1000.0]
    wf = fb.Workflow("race")
    calls = Calls()

    @wf.agent
    async def work(ctx: fb.Context, x: int) -> int:
        calls(ctx.run_id)
        await asyncio.sleep(0.002 * x)  # finishes at different times: some runs are
        return x  # finished before the other sweep's turn comes, some still leased

    async with opened(kind, tmp_path, clock=lambda: now[0]) as store:
        for i in range(8):  # created, never leased: their orchestrator died at once
            await store.create_run(f"r{i}", "race", i)
        now[0] += 60
        first, second = fb.Engine(store, lease_ttl=30), fb.Engine(store, lease_ttl=30)
        results = await asyncio.gather(
            first.resume_due({"race": wf}, concurrency=3),
            second.resume_due({"race": wf}, concurrency=3),
        )
    reported = sorted(r.run_id for batch in results for r in batch)
    assert reported == [f"r{i}" for i in range(8)]  # each once, by the sweep that drove it
    assert sorted(calls.log) == reported
    assert {r.status for batch in results for r in batch} == {RunStatus.SUCCEEDED}


async def test_resume_due_continues_runs_whose_questions_were_answered(
    kind: str, tmp_path: Path
) -> None:
    """An answer recorded without the workflow's code (a reviewer's tool) is enough: the
    next ``resume --due`` continues the run with it; a run still asking is left alone."""
    wf = fb.Workflow("answers")
    calls = Calls()

    @wf.agent
    async def classify(ctx: fb.Context, doc: str) -> str:
        calls(f"{ctx.run_id}/classify")
        raise fb.NeedsHuman("which category?", suggestions=["invoice", "receipt"])

    @wf.agent(after=[classify])
    async def file_doc(ctx: fb.Context, classify: str) -> str:
        return f"filed as {classify}"

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        for run_id in ("answered", "asking"):
            assert (await engine.run(wf, "doc", run_id=run_id)).status == RunStatus.NEEDS_REVIEW
        assert await engine.resume_due({"answers": wf}) == []  # nobody answered yet
        item = next(i for i in await store.review_list() if i.run_id == "answered")
        await engine.resolve_review(item.id, "receipt")  # recorded only: no workflow given
        assert [r.run_id for r in await engine.answered()] == ["answered"]
        [done] = await engine.resume_due({"answers": wf})
        asking = await store.get_run("asking")
    assert (done.run_id, done.status) == ("answered", RunStatus.SUCCEEDED)
    assert done["file_doc"] == "filed as receipt"
    assert asking is not None
    assert asking.status == RunStatus.NEEDS_REVIEW
    assert calls.log == ["answered/classify", "asking/classify"]  # the answer, not a rerun


async def test_dead_letter_replay_resumes_from_checkpoints(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("replay")
    calls = Calls()
    broken = [True]

    @wf.agent
    async def extract(ctx: fb.Context, x: int) -> int:
        calls("extract")
        return x

    @wf.agent(after=[extract])
    async def post(ctx: fb.Context, extract: int) -> int:
        calls("post")
        if broken[0]:
            raise fb.Permanent("ledger closed")
        return extract + 1

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        failed = await engine.run(wf, 1, run_id="r1")
        assert failed.status == RunStatus.FAILED
        [entry] = await store.dlq_list()
        broken[0] = False
        replayed = await engine.replay(entry.id, wf)
        assert await store.dlq_list() == []
    assert replayed.status == RunStatus.SUCCEEDED
    assert replayed["post"] == 2
    assert calls.log == ["extract", "post", "post"]  # extract kept its checkpoint


async def test_replay_with_a_patched_input_runs_everything_again(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("patched")

    @wf.agent
    async def check(ctx: fb.Context, x: int) -> int:
        if x < 0:
            raise fb.Permanent("negative amount")
        return x

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        await engine.run(wf, -5, run_id="r1")
        [entry] = await store.dlq_list()
        result = await engine.replay(entry.id, wf, input=5)
        run = await store.get_run("r1")
    assert result["check"] == 5
    assert run is not None
    assert run.input == 5


async def test_shared_state_conflicts_are_retried_never_lost(kind: str, tmp_path: Path) -> None:
    wf = fb.Workflow("state")
    workers = [f"w{i}" for i in range(6)]

    @wf.agent
    async def start(ctx: fb.Context, x: int) -> int:
        return x

    def make(name: str) -> None:
        async def bump(ctx: fb.Context, start: int) -> int:
            version, data = await ctx.state.get()
            await asyncio.sleep(0.001)  # everyone reads the same version, then writes
            await ctx.state.set({**data, name: True, "n": data.get("n", 0) + 1}, version=version)
            return ctx.attempt

        bump.__name__ = name
        wf.add(bump, name=name, after=["start"])

    for name in workers:
        make(name)

    async with opened(kind, tmp_path) as store:
        result = await fb.Engine(store).run(wf, 0, run_id="r1")
        version, data = await store.get_state("r1")
    assert result.status == RunStatus.SUCCEEDED
    assert data["n"] == 6  # every increment landed: conflicts were retried, none overwritten
    assert all(data[name] for name in workers)
    assert version == 6
    assert max(result[name] for name in workers) > 1  # conflicts did happen and were retried


async def test_bad_input_for_an_existing_run_leaves_that_run_alone(
    kind: str, tmp_path: Path
) -> None:
    class Invoice(BaseModel):
        amount: float

    wf = fb.Workflow("typed2", input=Invoice)

    @wf.agent
    async def total(ctx: fb.Context, invoice: Invoice) -> float:
        return invoice.amount

    async with opened(kind, tmp_path) as store:
        engine = fb.Engine(store)
        first = await engine.run(wf, {"amount": 3}, run_id="r1")
        again = await engine.run(wf, {"amount": "garbage"}, run_id="r1")
        assert await store.dlq_list() == []
    assert first.status == again.status == RunStatus.SUCCEEDED
    assert again["total"] == 3
