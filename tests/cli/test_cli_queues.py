"""`firebreak dlq` and `firebreak review`: inspect, replay, drop, resolve."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cli_workflows
import pytest
from cli_helpers import Invoke, out_json

from firebreak.store import _rules

CARD_DECLINED = {"FIREBREAK_TEST_CARD_DECLINED": "1"}


@pytest.fixture
def failed_run(fb: Invoke, write_json: Callable[[str, Any], str]) -> str:
    """A run of cli-failing whose card was declined; returns its dead-letter entry id."""
    path = write_json("order.json", {"id": 7})
    result = fb("run", "cli_workflows:failing", "-i", path, "--run-id", "f1", env=CARD_DECLINED)
    assert result.exit_code == 1
    [entry] = out_json(fb("dlq", "list", "--json"))
    return str(entry["id"])


@pytest.fixture
def review_item(fb: Invoke, write_json: Callable[[str, Any], str]) -> str:
    """A run of cli-review waiting for a person; returns the review item's id."""
    result = fb("run", "cli_workflows:review", "-i", write_json("d.json", {}), "--run-id", "r1")
    assert result.exit_code == 5
    [item] = out_json(fb("review", "list", "--json"))
    return str(item["id"])


def test_dlq_list_and_show_describe_the_failure(fb: Invoke, failed_run: str) -> None:
    [entry] = out_json(fb("dlq", "list", "--json"))
    assert entry["run_id"] == "f1"
    assert entry["workflow"] == "cli-failing"
    assert "card declined" in entry["reason"]

    shown = out_json(fb("dlq", "show", failed_run, "--json"))
    assert shown["input"] == {"id": 7}
    assert {s["agent"]: s["status"] for s in shown["steps"]}["charge"] == "failed"

    table = fb("dlq", "list")
    assert table.exit_code == 0
    assert "1 dead letter " in table.stdout
    text = fb("dlq", "show", failed_run).stdout
    assert "Permanent: card declined" in text


@pytest.mark.usefixtures("failed_run")
def test_resume_of_a_failed_run_points_to_dlq_replay(fb: Invoke) -> None:
    result = fb("resume", "f1", "-w", "cli_workflows:failing")
    assert result.exit_code == 1
    assert "firebreak dlq replay f1 -w cli_workflows:failing" in " ".join(result.stderr.split())


def test_dlq_list_filters_by_workflow(fb: Invoke, failed_run: str) -> None:
    assert out_json(fb("dlq", "list", "--workflow", "cli-ok", "--json")) == []


def test_replay_after_the_fault_is_fixed_succeeds(fb: Invoke, failed_run: str) -> None:
    result = fb("dlq", "replay", failed_run, "--workflow", "cli_workflows:failing", "--json")
    assert result.exit_code == 0, result.output
    data = out_json(result)
    assert data["run_id"] == "f1"
    assert data["status"] == "succeeded"
    assert data["outputs"]["ship"] == "shipped"
    assert sorted(data["executed"]) == ["charge", "reserve", "ship"]  # reserve was undone
    assert out_json(fb("dlq", "list", "--json")) == []
    assert out_json(fb("runs", "--status", "succeeded", "--json"))[0]["run_id"] == "f1"


def test_replay_while_the_fault_persists_fails_again(fb: Invoke, failed_run: str) -> None:
    result = fb("dlq", "replay", failed_run, "-w", "cli_workflows:failing", env=CARD_DECLINED)
    assert result.exit_code == 1
    assert "failed" in result.stdout
    assert len(out_json(fb("dlq", "list", "--json"))) == 1


def test_replay_with_a_patched_input(fb: Invoke, write_json: Callable[[str, Any], str]) -> None:
    bad = write_json("bad.json", {"id": 8, "decline": True})
    assert fb("run", "cli_workflows:failing", "-i", bad, "--run-id", "f2").exit_code == 1
    [entry] = out_json(fb("dlq", "list", "--json"))
    good = write_json("good.json", {"id": 8})
    result = fb("dlq", "replay", entry["id"], "-w", "cli_workflows:failing", "-i", good, "--json")
    assert result.exit_code == 0, result.output
    assert out_json(fb("show", "f2", "--json"))["run"]["input"] == {"id": 8}


def test_replay_from_step_runs_it_and_its_dependents(fb: Invoke, failed_run: str) -> None:
    result = fb(
        "dlq", "replay", failed_run, "-w", "cli_workflows:failing", "--from-step", "charge",
        "--json",
    )  # fmt: skip
    assert result.exit_code == 0
    assert "charge" in out_json(result)["executed"]


def test_replay_needs_the_workflow(fb: Invoke, failed_run: str) -> None:
    result = fb("dlq", "replay", failed_run)
    assert result.exit_code == 2
    assert "--workflow" in result.stderr


def test_replay_with_an_unknown_agent_or_entry_is_a_clear_error(
    fb: Invoke, failed_run: str
) -> None:
    step = fb("dlq", "replay", failed_run, "-w", "cli_workflows:failing", "--from-step", "nope")
    assert step.exit_code == 2
    assert "has no agent 'nope'" in step.stderr
    entry = fb("dlq", "replay", "nope", "-w", "cli_workflows:failing")
    assert entry.exit_code == 2
    assert "no dead-letter entry 'nope'" in entry.stderr


def test_dlq_drop_removes_the_entry_and_unknown_ids_exit_2(fb: Invoke, failed_run: str) -> None:
    assert fb("dlq", "drop", failed_run).exit_code == 0
    assert out_json(fb("dlq", "list", "--json")) == []
    again = fb("dlq", "drop", failed_run)
    assert again.exit_code == 2
    assert "no dead-letter entry" in again.stderr
    assert fb("dlq", "show", failed_run).exit_code == 2


def test_dlq_commands_take_the_run_id_too(fb: Invoke, failed_run: str) -> None:
    """The run id names the run's one entry: what a user has at hand after `firebreak run`."""
    assert out_json(fb("dlq", "show", "f1", "--json"))["id"] == failed_run
    # Whole, as people chose it: `f` is not run `f1` (a drop would delete another's entry).
    assert fb("dlq", "drop", "f").exit_code == 2
    replayed = fb("dlq", "replay", "f1", "-w", "cli_workflows:failing", "--json", env=CARD_DECLINED)
    assert replayed.exit_code == 1  # failed again: back in the queue, under the same run id
    again = out_json(fb("dlq", "show", "f1", "--json"))
    assert again["run_id"] == "f1"
    dropped = fb("dlq", "drop", "f1", "--json")
    assert dropped.exit_code == 0
    assert out_json(dropped) == {"dropped": again["id"], "run_id": "f1"}
    assert out_json(fb("dlq", "list", "--json")) == []
    assert fb("dlq", "show", "f1").exit_code == 2


def test_review_list_and_show_give_the_question_and_suggestions(
    fb: Invoke, review_item: str
) -> None:
    shown = out_json(fb("review", "show", review_item, "--json"))
    assert shown["agent"] == "classify"
    assert shown["suggestions"] == ["invoice", "receipt"]
    assert shown["status"] == "open"
    text = fb("review", "show", review_item).stdout
    assert "which category?" in text
    assert 'suggestion 1: "invoice"' in text
    table = fb("review", "list", env={"COLUMNS": "80"}).stdout
    assert "1 review item " in table
    assert f"│ {review_item[:12]} │" in table  # its start, as docker shows ids
    assert review_item not in table
    run = fb("show", "r1").stdout  # the run's own items, by the id `review show` takes
    assert f"review (open): {review_item[:12]}  classify: " in run
    assert [i["id"] for i in out_json(fb("show", "r1", "--json"))["reviews"]] == [review_item]


def test_review_commands_take_a_unique_start_of_the_id(
    fb: Invoke, write_json: Callable[[str, Any], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = iter(["abc123" + "0" * 26, "abc456" + "0" * 26])
    monkeypatch.setattr(_rules, "new_id", lambda: next(ids))
    for run in ("r1", "r2"):
        fb("run", "cli_workflows:review", "-i", write_json(f"{run}.json", {}), "--run-id", run)

    assert out_json(fb("review", "show", "abc4", "--json"))["run_id"] == "r2"
    ambiguous = fb("review", "show", "abc")
    assert ambiguous.exit_code == 2
    assert "'abc' is the start of 2 review items' ids: give more of it" in ambiguous.stderr
    assert fb("review", "show", "abd").exit_code == 2
    answer = write_json("answer.json", "invoice")
    result = fb("review", "resolve", "abc1", "--value", answer, "--json")
    assert result.exit_code == 0, result.output
    assert out_json(result)["item"]["id"] == "abc123" + "0" * 26


def test_resolve_with_workflow_validates_and_continues_the_run(
    fb: Invoke, review_item: str, write_json: Callable[[str, Any], str]
) -> None:
    answer = write_json("answer.json", "invoice")
    result = fb(
        "review", "resolve", review_item, "--value", answer, "-w", "cli_workflows:review", "--json"
    )
    assert result.exit_code == 0, result.output
    data = out_json(result)
    assert data["item"]["status"] == "resolved"
    assert data["run"]["status"] == "succeeded"
    assert data["run"]["result"]["outputs"]["file_doc"] == "filed as invoice"
    assert out_json(fb("review", "list", "--json")) == []
    assert len(out_json(fb("review", "list", "--all", "--json"))) == 1
    again = fb("review", "resolve", review_item, "--value", answer)
    assert again.exit_code == 2
    assert "already resolved" in again.stderr


def test_resolve_refuses_an_answer_the_agent_would_not_accept(
    fb: Invoke, review_item: str, write_json: Callable[[str, Any], str]
) -> None:
    answer = write_json("answer.json", "poem")
    result = fb("review", "resolve", review_item, "--value", answer, "-w", "cli_workflows:review")
    assert result.exit_code == 2
    assert "unknown category 'poem'" in result.stderr
    assert out_json(fb("review", "show", review_item, "--json"))["status"] == "open"


def test_resolve_without_workflow_records_and_resume_uses_the_answer(
    fb: Invoke, review_item: str, write_json: Callable[[str, Any], str]
) -> None:
    answer = write_json("answer.json", "receipt")
    recorded = fb("review", "resolve", review_item, "--value", answer)
    assert recorded.exit_code == 0
    assert "firebreak resume r1" in recorded.stdout
    assert out_json(fb("show", "r1", "--json"))["run"]["status"] == "needs_review"

    resumed = fb("resume", "r1", "-w", "cli_workflows:review", "--json")
    assert resumed.exit_code == 0
    assert out_json(resumed)["outputs"]["file_doc"] == "filed as receipt"


@pytest.mark.usefixtures("existing_store")
def test_resolve_unknown_item_exits_2(fb: Invoke, write_json: Callable[[str, Any], str]) -> None:
    result = fb("review", "resolve", "nope", "--value", write_json("a.json", 1))
    assert result.exit_code == 2
    assert "no review item 'nope'" in result.stderr


def test_compensation_ran_in_this_process(fb: Invoke, failed_run: str) -> None:
    assert 7 in cli_workflows.RELEASED
