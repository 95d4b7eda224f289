"""`firebreak run`, `resume`, `runs` and `show`: exit codes, JSON output, tables."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from cli_helpers import Invoke, out_json
from typer.testing import CliRunner

import firebreak as fb_api
from firebreak import __version__
from firebreak.cli import app
from firebreak.store import open_store

CARD_DECLINED = {"FIREBREAK_TEST_CARD_DECLINED": "1"}
LOOKUP_DOWN = {"FIREBREAK_TEST_LOOKUP_DOWN": "1"}


def test_version_prints_the_package_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.stdout.strip() == f"firebreak {__version__}"


def test_help_documents_the_exit_codes() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for code in ("0 succeeded", "1 failed", "2 usage", "3 degraded", "4 paused", "5 needs review"):
        assert code in text


def test_help_paragraphs_flow_to_the_terminal_width() -> None:
    """A docstring's line breaks are the source's, not the terminal's: they are joined."""
    result = CliRunner().invoke(app, ["resume", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "runs whose review questions were all answered, and interrupted runs" in result.stdout
    replay = CliRunner().invoke(app, ["dlq", "replay", "--help"], env={"COLUMNS": "200"})
    assert "(and --from-step's agent and its dependents)" in replay.stdout


def test_run_succeeds_with_exit_0_and_json_only_on_stdout(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    result = fb("run", "cli_workflows:ok", "--input", write_json("in.json", {"n": 21}), "--json")
    assert result.exit_code == 0, result.output
    data = out_json(result)
    assert data["status"] == "succeeded"
    assert data["ok"] is True
    assert data["outputs"] == {"double": {"n": 42}, "report": "n=42"}
    assert data["executed"] == ["double", "report"]
    assert result.stderr == ""


def test_run_prints_a_summary_for_people(fb: Invoke, write_json: Callable[[str, Any], str]) -> None:
    result = fb("run", "cli_workflows:ok", "-i", write_json("in.json", {"n": 1}), "--run-id", "r1")
    assert result.exit_code == 0
    assert "run r1 (cli-ok): succeeded" in result.stdout
    assert '"n=2"' in result.stdout


def test_run_with_an_existing_run_id_returns_the_stored_result(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    path = write_json("in.json", {"n": 1})
    fb("run", "cli_workflows:ok", "-i", path, "--run-id", "same")
    again = fb("run", "cli_workflows:ok", "--run-id", "same", "--json")
    assert again.exit_code == 0
    data = out_json(again)
    assert data["outputs"]["report"] == "n=2"
    assert data["executed"] == []  # nothing ran again


def test_degraded_run_exits_3_and_names_what_is_missing(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    result = fb("run", "cli_workflows:degrading", "-i", write_json("in.json", {"a": 1}), "--json")
    assert result.exit_code == 3
    data = out_json(result)
    assert data["status"] == "degraded"
    assert "enrichment service down" in data["missing"]["enrich"]
    assert data["outputs"]["summarise"] == {"extras": 0}


def test_failed_run_exits_1(fb: Invoke, write_json: Callable[[str, Any], str]) -> None:
    path = write_json("order.json", {"id": 7})
    result = fb("run", "cli_workflows:failing", "-i", path, "--json", env=CARD_DECLINED)
    assert result.exit_code == 1
    data = out_json(result)
    assert data["status"] == "failed"
    assert data["failed_agent"] == "charge"
    assert data["compensated"] == ["reserve"]
    assert data["error"]["message"] == "card declined"


def test_run_waiting_for_review_exits_5(fb: Invoke, write_json: Callable[[str, Any], str]) -> None:
    result = fb("run", "cli_workflows:review", "-i", write_json("doc.json", {"d": 1}), "--json")
    assert result.exit_code == 5
    data = out_json(result)
    assert data["status"] == "needs_review"
    assert len(data["reviews"]) == 1


def test_paused_run_exits_4_and_resume_due_finishes_it(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    path = write_json("q.json", "acme")
    paused = fb("run", "cli_workflows:paused", "-i", path, "--run-id", "p1", env=LOOKUP_DOWN)
    assert paused.exit_code == 4, paused.output
    assert "paused" in paused.stdout
    assert "paused by: lookup: " in paused.stdout  # which agent, and the error

    result = fb("resume", "--due", "--workflow", "cli_workflows:paused", "--json")
    assert result.exit_code == 0, result.output
    [resumed] = out_json(result)
    assert resumed["run_id"] == "p1"
    assert resumed["status"] == "succeeded"
    assert resumed["outputs"] == {"lookup": {"found": "acme"}}


@pytest.mark.usefixtures("existing_store")
def test_resume_due_with_nothing_due_exits_0(fb: Invoke) -> None:
    result = fb("resume", "--due", "-w", "cli_workflows:paused")
    assert result.exit_code == 0
    assert (
        "nothing to resume: no paused run is due, none answered, none interrupted" in result.stdout
    )


def test_resume_due_names_runs_another_process_still_leases(fb: Invoke, store_url: str) -> None:
    """A user who just killed an orchestrator learns why its run is not resumed yet."""

    async def leased_elsewhere() -> None:
        async with open_store(store_url) as store:
            for i in range(5):
                await store.begin_run(f"held{i}", "cli-paused", {}, owner="gone:1:x", ttl=60)

    asyncio.run(leased_elsewhere())
    result = fb("resume", "--due", "-w", "cli_workflows:paused")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "nothing to resume" in text
    assert re.search(r"held\d is leased by gone:1:x until \S+ \S+: if that process is gone", text)
    assert "and 2 more leased runs" in text


def test_resume_due_names_due_runs_of_workflows_not_given_and_exits_2(
    fb: Invoke, write_json: Callable[[str, Any], str], caplog: pytest.LogCaptureFixture
) -> None:
    """A cron line missing one --workflow must not pass for a sweep that recovered all."""
    path = write_json("q.json", "acme")
    for run_id in ("p1", "p2"):
        fb("run", "cli_workflows:paused", "-i", path, "--run-id", run_id, env=LOOKUP_DOWN)
    result = fb("resume", "--due", "-w", "cli_workflows:ok")
    assert result.exit_code == 2, result.output
    text = " ".join(result.stderr.split())
    assert "2 runs to resume left as they are, of workflows not given: 'cli-paused' (2)" in text
    # Said once, by the command: the engine's own warning line was printed as well.
    assert not [r for r in caplog.records if "workflows not given" in r.getMessage()]
    assert "nothing to resume" not in result.stdout
    both = fb("resume", "--due", "-w", "cli_workflows:ok", "-w", "cli_workflows:paused")
    assert both.exit_code == 0, both.output


def test_runs_and_show_tell_a_run_whose_orchestrator_died(fb: Invoke, store_url: str) -> None:
    """A run left "running" by a dead process says so, and what continues it."""

    async def two_runs() -> None:
        async with open_store(store_url, clock=lambda: time.time() - 120) as past:
            await past.begin_run("dead", "cli-paused", {}, owner="gone:1:x", ttl=60)
        async with open_store(store_url) as store:
            await store.begin_run("live", "cli-paused", {}, owner="here:1:x", ttl=60)

    asyncio.run(two_runs())
    table = fb("runs", env={"COLUMNS": "200"}).stdout
    [dead] = [line for line in table.splitlines() if "│ dead" in line]
    [live] = [line for line in table.splitlines() if "│ live" in line]
    assert "lease expired: resume --due" in dead
    assert "resume" not in live
    assert "note: lease expired: resume --due" in fb("show", "dead").stdout
    assert "note:" not in fb("show", "live").stdout


def test_resume_due_exit_code_is_the_worst_run(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    path = write_json("q.json", "acme")
    fb("run", "cli_workflows:paused", "-i", path, "--run-id", "p1", env=LOOKUP_DOWN)
    still_down = fb("resume", "--due", "-w", "cli_workflows:paused", "--json", env=LOOKUP_DOWN)
    assert still_down.exit_code == 4
    assert [r["status"] for r in out_json(still_down)] == ["paused"]


def test_resume_by_id_continues_a_paused_run(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    path = write_json("q.json", "acme")
    fb("run", "cli_workflows:paused", "-i", path, "--run-id", "p1", env=LOOKUP_DOWN)
    result = fb("resume", "p1", "--workflow", "cli_workflows:paused", "--json")
    assert result.exit_code == 0
    assert out_json(result)["status"] == "succeeded"


def test_resume_without_workflow_says_to_pass_it(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    fb("run", "cli_workflows:ok", "-i", write_json("in.json", {"n": 1}), "--run-id", "r1")
    result = fb("resume", "r1")
    assert result.exit_code == 2
    assert "pass --workflow MODULE:WORKFLOW" in result.stderr
    assert "'cli-ok'" in result.stderr
    assert result.stdout == ""


def test_resume_with_another_workflows_code_is_refused(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    fb("run", "cli_workflows:ok", "-i", write_json("in.json", {"n": 1}), "--run-id", "r1")
    result = fb("resume", "r1", "-w", "cli_workflows:paused")
    assert result.exit_code == 2
    assert "belongs to workflow 'cli-ok'" in result.stderr


def test_resume_needs_run_id_or_due(fb: Invoke) -> None:
    assert fb("resume").exit_code == 2
    assert fb("resume", "r1", "--due", "-w", "cli_workflows:ok").exit_code == 2


@pytest.mark.usefixtures("existing_store")
def test_resume_of_an_unknown_run_is_a_one_line_error(fb: Invoke) -> None:
    result = fb("resume", "nope", "-w", "cli_workflows:ok")
    assert result.exit_code == 2
    assert result.stderr.strip() == "error: no run 'nope' in this store"


def test_runs_lists_newest_first_and_filters(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    fb("run", "cli_workflows:ok", "-i", write_json("a.json", {"n": 1}), "--run-id", "a")
    fb("run", "cli_workflows:degrading", "-i", write_json("b.json", {}), "--run-id", "b")
    fb("run", "cli_workflows:ok", "-i", write_json("c.json", {"n": 2}), "--run-id", "c")

    everything = out_json(fb("runs", "--json"))
    assert [r["run_id"] for r in everything] == ["c", "b", "a"]
    assert {r["status"] for r in everything} == {"succeeded", "degraded"}

    degraded = out_json(fb("runs", "--status", "degraded", "--json"))
    assert [r["run_id"] for r in degraded] == ["b"]
    ok = out_json(fb("runs", "--workflow", "cli-ok", "--limit", "1", "--json"))
    assert [r["run_id"] for r in ok] == ["c"]

    table = fb("runs", env={"COLUMNS": "80"})
    assert table.exit_code == 0
    assert "3 runs" in table.stdout
    # At 80 columns every row is one line: the ids whole, times unbroken (an update on the
    # day of creation shows its time alone).
    rows = [line for line in table.stdout.splitlines() if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == ["c", "b", "a"]
    assert "cli-degrading" in rows[1]
    created, updated = (cell.strip() for cell in rows[0].split("│")[4:6])
    # Created today: the time alone too, as `ls -l` shows a recent file's.
    assert re.fullmatch(r"(\d{4}-\d\d-\d\d )?\d\d:\d\d:\d\d", created), created
    assert re.fullmatch(r"\d\d:\d\d:\d\d", updated), updated
    assert "--limit N for more" not in table.stdout  # all three shown
    one = fb("runs", "--limit", "1").stdout
    assert one.startswith("1 run ")
    assert "the newest 1; --limit N for more" in one


def test_runs_refuses_an_unknown_status(fb: Invoke) -> None:
    assert fb("runs", "--status", "sleeping").exit_code == 2


def test_show_draws_every_agent_of_the_dag_with_the_workflow(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    fb("run", "cli_workflows:review", "-i", write_json("d.json", {}), "--run-id", "r1")
    data = out_json(fb("show", "r1", "--workflow", "cli_workflows:review", "--json"))
    assert data["run"]["status"] == "needs_review"
    steps = {s["agent"]: s for s in data["steps"]}
    assert steps["classify"]["status"] == "needs_review"
    assert steps["classify"]["after"] == []
    assert steps["file_doc"] == steps["file_doc"] | {"status": "pending", "after": ["classify"]}
    assert [item["agent"] for item in data["reviews"]] == ["classify"]


def test_show_table_names_steps_status_attempts_and_reasons(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    fb("run", "cli_workflows:degrading", "-i", write_json("in.json", {}), "--run-id", "r1")
    result = fb("show", "r1", "-w", "cli_workflows:degrading")
    assert result.exit_code == 0
    text = result.stdout
    assert "run r1 (cli-degrading): degraded" in text
    assert re.search(r"enrich \(optional\)\s*│\s*fetch\s*│\s*degraded", text), text
    assert "ConnectionError" in text


def test_show_without_workflow_lists_committed_steps(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    path = write_json("order.json", {"id": 7})
    fb("run", "cli_workflows:failing", "-i", path, "--run-id", "f1", env=CARD_DECLINED)
    data = out_json(fb("show", "f1", "--json"))
    statuses = {s["agent"]: s["status"] for s in data["steps"]}
    assert statuses == {"reserve": "compensated", "charge": "failed", "ship": "skipped"}
    assert len(data["dead_letters"]) == 1
    text = fb("show", "f1").stdout
    assert "add --workflow" in text
    assert "firebreak dlq show f1" in text  # by run id, as every dlq command takes it


@pytest.mark.usefixtures("existing_store")
def test_show_unknown_run_exits_2(fb: Invoke) -> None:
    result = fb("show", "nope")
    assert result.exit_code == 2
    assert "no run 'nope'" in result.stderr


def test_ids_and_errors_are_printed_as_stored_not_as_markup_or_emoji(
    fb: Invoke, store_url: str
) -> None:
    """A run id `bad[/x]` or an error `[/red]` crashed `runs` (Rich markup); `a:fire:1`
    printed as an emoji. Ids are copied from these tables into the next command."""
    wf = fb_api.Workflow("wf[bold]x")

    @wf.agent
    async def a(ctx: fb_api.Context, x: int) -> int:
        raise ValueError("err [/red] :fire: [link=x]y")

    async def runs() -> None:
        async with fb_api.Engine(store_url) as engine:
            for run_id in ("bad[/x]", "deploy:fire:1"):
                await engine.run(wf, 1, run_id=run_id)

    asyncio.run(runs())
    for command in (
        ["runs"],
        ["dlq", "list"],
        ["show", "bad[/x]"],
        ["dlq", "show", "deploy:fire:1"],
    ):
        result = fb(*command, env={"COLUMNS": "200"})
        assert result.exit_code == 0, (command, result.output)
        assert "🔥" not in result.stdout
        assert "err [/red] :fire: [link=x]y" in result.stdout, command
    assert "bad[/x]" in fb("runs", env={"COLUMNS": "200"}).stdout
    assert "firebreak dlq show 'bad[/x]'" in fb("show", "bad[/x]", env={"COLUMNS": "200"}).stdout


def test_a_unique_start_of_a_run_id_stands_for_it(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    """Made-up ids are 32 hex digits, folded over two lines in an 80-column `runs` table:
    tables show the first 12, and every command takes a unique start, as docker does."""
    path = write_json("q.json", "acme")
    made = out_json(fb("run", "cli_workflows:paused", "-i", path, "--json", env=LOOKUP_DOWN))
    run_id = made["run_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", run_id)
    fb("run", "cli_workflows:paused", "-i", path, "--run-id", "p-10", env=LOOKUP_DOWN)
    twins = ["abcd" + "0" * 27 + "1", "abcd" + "0" * 27 + "2"]
    for twin in twins:
        fb("run", "cli_workflows:paused", "-i", path, "--run-id", twin, env=LOOKUP_DOWN)
    table = fb("runs", env={"COLUMNS": "80"}).stdout
    assert f" {run_id[:12]} " in table
    assert run_id[12:] not in table
    assert " p-10 " in table  # an id of the user's own is shown whole
    assert out_json(fb("show", run_id[:12], "--json"))["run"]["run_id"] == run_id
    ambiguous = fb("show", "abcd")
    assert ambiguous.exit_code == 2
    assert f"'abcd' is the start of several runs' ids (e.g. {twins[0]}, {twins[1]})" in (
        " ".join(ambiguous.stderr.split())
    )
    # An id a person chose is matched whole: `p-1` must never act on run `p-10`.
    assert "no run 'p-1'" in fb("show", "p-1").stderr
    assert fb("show", run_id[:3]).exit_code == 2  # 4 hex digits at least, as git
    resumed = fb("resume", run_id[:7], "-w", "cli_workflows:paused", "--json")
    assert resumed.exit_code == 0
    assert out_json(resumed) | {"run_id": run_id, "status": "succeeded"} == out_json(resumed)


def test_a_run_that_did_not_succeed_says_what_to_run_next(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    """A failed run never named the dead-letter queue; a paused one gave a time, no command."""
    order = write_json("order.json", {"id": 7})
    failed = fb("run", "cli_workflows:failing", "-i", order, "--run-id", "f 1", env=CARD_DECLINED)
    text = " ".join(failed.stdout.split())
    assert "dead letter: firebreak dlq show 'f 1' --store sqlite:///" in text  # its store
    assert "once fixed: firebreak dlq replay 'f 1' -w cli_workflows:failing --store" in text
    q = write_json("q.json", "acme")
    paused = fb("run", "cli_workflows:paused", "-i", q, "--run-id", "p1", env=LOOKUP_DOWN)
    text = " ".join(paused.stdout.split())
    assert "firebreak resume --due -w cli_workflows:paused --store sqlite:///" in text
    assert "from cron; now: firebreak resume p1 -w cli_workflows:paused --store" in text
    review = fb("run", "cli_workflows:review", "-i", write_json("d.json", {"d": 1}))
    text = " ".join(review.stdout.split())
    assert "answer: firebreak review resolve" in text
    assert "--value FILE.json -w cli_workflows:review" in text
