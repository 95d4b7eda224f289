"""Expected errors: one line on stderr, nothing on stdout, a documented exit code."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Invoke, out_json

import firebreak as fb_api
from firebreak._cli.exits import ExitCode, exit_code, worst_exit_code
from firebreak.store import RunStatus


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("no_such_module:wf", "cannot import 'no_such_module': no module named 'no_such_module'"),
        ("no_such_pkg.flows:wf", "no module named 'no_such_pkg'"),
        (
            "cli_workflows:nope",
            "module 'cli_workflows' has no attribute 'nope'; it defines degrading, failing, ok,",
        ),
        ("cli_workflows:not_a_workflow", "is not a firebreak.Workflow (got a int)"),
        ("cli_workflows", "is not MODULE:WORKFLOW"),
        ("cli_workflows:", "is not MODULE:WORKFLOW"),
        ("cli_broken:broken", "DefinitionError: agent 'orphan': unknown dependency 'missing'"),
    ],
)
def test_a_bad_workflow_reference_exits_2_with_one_line(
    fb: Invoke, write_json: Callable[[str, Any], str], ref: str, message: str
) -> None:
    result = fb("run", ref, "--input", write_json("in.json", {}))
    assert result.exit_code == 2
    assert message in one_line(result.stderr)
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("x = (\n", "cannot import 'broken_mod': SyntaxError: '(' was never closed"),
        ("import no_such_dependency\n", "ModuleNotFoundError: No module named 'no_such_dep"),
        ("raise RuntimeError('no API key')\n", "cannot import 'broken_mod': RuntimeError: no API"),
    ],
)
def test_a_module_that_fails_to_import_exits_2_after_its_traceback(
    fb: Invoke,
    write_json: Callable[[str, Any], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    source: str,
    message: str,
) -> None:
    """Exit 1 would say "the run failed": no run began. The traceback shows where."""
    (tmp_path / "broken_mod.py").write_text(source, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "broken_mod", raising=False)
    result = fb("run", "broken_mod:wf", "--input", write_json("in.json", {}))
    assert result.exit_code == 2
    assert "Traceback" in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert result.stdout == ""


def test_a_file_path_for_a_module_says_how_to_name_it(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    result = fb("run", "./flows/invoices.py:wf", "--input", write_json("in.json", {}))
    assert result.exit_code == 2
    assert "names a file, not a module: write flows.invoices:wf" in one_line(result.stderr)


@pytest.mark.parametrize(
    "command",
    [["runs"], ["show", "r1"], ["resume", "--due", "-w", "cli_workflows:ok"], ["dlq", "list"],
     ["review", "list"]],
)  # fmt: skip
def test_reading_a_sqlite_store_that_does_not_exist_makes_none(
    fb: Invoke, tmp_path: Path, command: list[str]
) -> None:
    """A typo in --store must not create an empty store, nor pass for "nothing there"."""
    result = fb(*command)
    assert result.exit_code == 6
    assert f"no store at {tmp_path / 'x.db'}" in one_line(result.stderr)
    assert not (tmp_path / "x.db").exists()


def test_a_missing_input_file_is_a_clear_error(fb: Invoke, tmp_path: Path) -> None:
    result = fb("run", "cli_workflows:ok", "--input", str(tmp_path / "nope.json"), "--json")
    assert result.exit_code == 2
    assert one_line(result.stderr) == f"error: {tmp_path / 'nope.json'}: no such file"
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{oops", "(line 1, column 2)"),
        # Python reads NaN and Infinity; JSON has neither, and no store could keep them.
        ('{"amount": NaN}', "NaN is not a JSON value"),
    ],
)
def test_an_input_file_that_is_not_json_is_a_clear_error(
    fb: Invoke, tmp_path: Path, text: str, reason: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_text(text, encoding="utf-8")
    result = fb("run", "cli_workflows:ok", "--input", str(path))
    assert result.exit_code == 2
    assert "not valid JSON" in one_line(result.stderr)
    assert reason in result.stderr
    assert not (tmp_path / "x.db").exists()  # nothing was recorded, no store made


def test_run_without_input_or_run_id_says_what_is_missing(fb: Invoke) -> None:
    result = fb("run", "cli_workflows:ok")
    assert result.exit_code == 2
    assert "--input FILE.json" in one_line(result.stderr)


def test_run_id_of_a_run_that_does_not_exist_without_input(fb: Invoke) -> None:
    result = fb("run", "cli_workflows:ok", "--run-id", "ghost")
    assert result.exit_code == 2
    assert "run 'ghost' does not exist" in one_line(result.stderr)


def test_input_from_stdin(fb: Invoke) -> None:
    result = fb("run", "cli_workflows:ok", "-i", "-", "--json", stdin='{"n": 5}')
    assert result.exit_code == 0
    assert out_json(result)["outputs"]["report"] == "n=10"


def test_an_agent_error_fails_the_run_with_exit_1_not_a_cli_error(
    fb: Invoke, write_json: Callable[[str, Any], str]
) -> None:
    # The ok workflow's first agent indexes data["n"]: its KeyError fails the run.
    result = fb("run", "cli_workflows:ok", "--input", write_json("in.json", {}), "--json")
    assert result.exit_code == 1
    assert out_json(result)["failed_agent"] == "double"


def test_a_bad_store_url_exits_2(fb: Invoke) -> None:
    result = fb("runs", "--store", "nope", store=False)
    assert result.exit_code == 2
    assert "has no scheme (a SQLite file: sqlite:///nope)" in one_line(result.stderr)


def test_a_corrupt_store_exits_6(fb: Invoke, tmp_path: Path) -> None:
    (tmp_path / "x.db").write_bytes(b"this is not a database" * 512)
    result = fb("runs")
    assert result.exit_code == ExitCode.STORE == 6
    line = one_line(result.stderr)
    assert line.startswith("error: store corrupt: ")
    assert line.endswith("x.db is not a usable SQLite database: file is not a database")


def test_a_run_leased_by_another_process_exits_6(
    fb: Invoke, write_json: Callable[[str, Any], str], store_url: str
) -> None:
    path = write_json("q.json", "acme")
    env = {"FIREBREAK_TEST_LOOKUP_DOWN": "1"}
    assert fb("run", "cli_workflows:paused", "-i", path, "--run-id", "p1", env=env).exit_code == 4

    async def hold() -> None:
        async with fb_api.open_store(store_url) as store:
            await store.acquire_lease("p1", "someone-else", 60)

    asyncio.run(hold())
    result = fb("resume", "p1", "-w", "cli_workflows:paused")
    assert result.exit_code == 6
    line = one_line(result.stderr)
    assert "is leased by 'someone-else' until" in line
    assert "someone-else" in line


def test_the_store_defaults_to_firebreak_store_env(
    fb: Invoke,
    write_json: Callable[[str, Any], str],
    store_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FIREBREAK_STORE", store_url)
    path = write_json("in.json", {"n": 1})
    assert fb("run", "cli_workflows:ok", "-i", path, "--run-id", "e1", store=False).exit_code == 0
    # the same store, now named explicitly, holds the run
    assert out_json(fb("runs", "--json"))[0]["run_id"] == "e1"


def test_exit_codes_are_stable() -> None:
    assert [int(code) for code in ExitCode] == [0, 1, 2, 3, 4, 5, 6, 130, 143]
    assert exit_code(RunStatus.SUCCEEDED) == 0
    assert exit_code("failed") == 1
    assert exit_code("degraded") == 3
    assert exit_code("paused") == 4
    assert exit_code("needs_review") == 5
    assert worst_exit_code([]) == 0
    assert worst_exit_code(["degraded", "paused", "succeeded"]) == 4
    assert worst_exit_code(["paused", "needs_review"]) == 5
    assert worst_exit_code(["needs_review", "failed"]) == 1


def test_help_shows_no_value_for_a_flag_and_a_bad_choice_reads_plainly(fb: Invoke) -> None:
    # As well-known CLIs print them: a flag takes no value, so help names none for it
    # (typer 0.29 printed `--json <bool>`); a bad choice is one sentence without
    # pydantic's "Value error," in the middle.
    help_text = fb("runs", "--help", store=False).output
    assert "--json" in help_text
    assert "<bool>" not in help_text
    bad = fb("runs", "--status", "bogus")
    assert bad.exit_code == 2
    assert "'bogus' is not one of 'pending'" in bad.output
    assert "Value error" not in bad.output
