"""How commands show records: JSON for machines, rich tables for people."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from enum import Enum
from shlex import quote
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from firebreak.engine import RunResult
from firebreak.store import GENERATED_RUN_ID, DeadLetter, ReviewItem, RunRecord, StepRecord
from firebreak.workflow import Workflow

__all__ = [
    "dead_letter_json",
    "dlq_table",
    "jsonable",
    "print_dead_letter",
    "print_result",
    "print_review",
    "print_run",
    "result_json",
    "review_table",
    "runs_table",
    "status_text",
    "step_rows",
    "write_json",
]

_STYLES = {
    "succeeded": "green",
    "degraded": "yellow",
    "failed": "bold red",
    "paused": "blue",
    "needs_review": "magenta",
    "skipped": "dim",
    "compensated": "cyan",
    "compensation_failed": "bold red",
    "running": "bold",
    "pending": "dim",
    "open": "magenta",
    "resolved": "green",
}
_SHORT = 60  # characters of an output or value shown in a table cell


def status_text(status: str) -> Text:
    """A run, step or review status, coloured by what it means."""
    value = str(status.value if isinstance(status, Enum) else status)
    return Text(value, style=_STYLES.get(value, ""))


def jsonable(value: Any) -> Any:
    """`value` as JSON data: records and results field by field, pydantic models dumped."""
    if isinstance(value, Enum):
        value = value.value
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(item) for item in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # a pydantic model
        return dump(mode="json")
    return repr(value)


def write_json(data: Any) -> None:
    """Write `data` as indented JSON to stdout: the only thing ``--json`` prints there."""
    sys.stdout.write(json.dumps(jsonable(data), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def result_json(result: RunResult) -> dict[str, Any]:
    """A run's outcome as JSON data, with ``ok`` (succeeded or degraded)."""
    data: dict[str, Any] = jsonable(result)
    data["ok"] = result.ok
    return data


def dead_letter_json(entry: DeadLetter) -> dict[str, Any]:
    """A dead-letter entry as JSON data; its steps as a list in commit order."""
    data: dict[str, Any] = jsonable(entry)
    if entry.steps is not None:
        data["steps"] = [jsonable(step) for step in entry.steps.values()]
    return data


def counted(n: int, noun: str) -> str:
    """``1 run``, ``3 runs``: a table's title."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def when(timestamp: float | None, since: float | None = None) -> str:
    """Epoch seconds as local date and time; empty for none.

    Only the time when it falls on the same local day as `since`.
    """
    if not timestamp:
        return ""
    at = datetime.fromtimestamp(timestamp, tz=UTC).astimezone()
    if since and datetime.fromtimestamp(since, tz=UTC).astimezone().date() == at.date():
        return at.strftime("%H:%M:%S")
    return at.strftime("%Y-%m-%d %H:%M:%S")


class DataTable(Table):
    """A table whose cells are data, printed as they are.

    ``[/x]`` in a run id or an error message is not Rich markup (which crashed the table).
    """

    def add_row(self, *renderables: RenderableType | None, **options: Any) -> None:
        """`Table.add_row`, with every string cell taken as plain text."""
        cells = [Text(cell) if isinstance(cell, str) else cell for cell in renderables]
        super().add_row(*cells, **options)

    def or_title(self) -> RenderableType:
        """The table, or its title alone ("0 dead letters") when it has no row to show."""
        return self if self.row_count else Text(str(self.title or ""))


SHORT_ID = 12
"""Characters of a made-up id (a review item's, a run's) that tables show, as docker does."""


def short_id(run_id: str) -> str:
    """A run id as tables show it: firebreak's own (32 hex digits) by its first 12.

    As docker shows its ids: every command takes a unique start. Any other id is whole.
    """
    return run_id[:SHORT_ID] if GENERATED_RUN_ID.fullmatch(run_id) else run_id


def short(value: Any, limit: int = _SHORT) -> str:
    """A value as compact JSON, cut to `limit` characters."""
    try:
        text = json.dumps(jsonable(value), ensure_ascii=False, separators=(",", ":"))
    except ValueError:
        text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_line(error: Mapping[str, Any] | None) -> str:
    """A stored error (``{"type", "message"}``) as ``Type: message``.

    ``agent: Type: message`` for the error that paused a run (it names the agent).
    """
    if not error:
        return ""
    kind = str(error.get("type", "")).rsplit(".", 1)[-1]
    message = str(error.get("message", ""))
    line = f"{kind}: {message}" if kind and message else kind or message
    return f"{error['agent']}: {line}" if error.get("agent") else line


def _error_label(status: str) -> str:
    return "paused by" if status == "paused" else "error"


def _field(console: Console, label: str, value: str) -> None:
    console.print(f"[bold]{label}:[/] {escape(value)}", highlight=False, soft_wrap=True)


def command_line(words: Sequence[str], refs: Sequence[str], store: str | None = None) -> str:
    """A firebreak command line to copy, each word and ``-w`` reference shell-quoted.

    `store`: the ``--store`` the command was given, repeated (without it the suggested
    command would look in the default store).
    """
    quoted = [word if word.startswith("--") else quote(word) for word in words]
    parts = ["firebreak", *quoted, *(f"-w {quote(ref)}" for ref in refs)]
    if store is not None:
        parts.append(f"--store {quote(store)}")
    return " ".join(parts)


_SOME_WORKFLOW = ("MODULE:WORKFLOW",)


def print_result(
    console: Console, result: RunResult, refs: Sequence[str] = (), store: str | None = None
) -> None:
    """What a run (or resume or replay) ended with, for a person, and what to do next.

    `refs` and `store`: the ``MODULE:WORKFLOW`` references and the ``--store`` the
    command was given, for the commands it suggests.
    """
    refs = refs or _SOME_WORKFLOW
    run_id = result.run_id
    line = Text.assemble(
        ("run ", "bold"), result.run_id, f" ({result.workflow}): ", status_text(result.status)
    )
    console.print(line, highlight=False, soft_wrap=True)
    if result.failed_agent:
        _field(console, "failed agent", result.failed_agent)
    if result.error:
        _field(console, _error_label(result.status), error_line(result.error))
    for agent, reason in result.missing.items():
        _field(console, f"missing {agent}", reason)
    if result.compensated:
        _field(console, "compensated", ", ".join(result.compensated))
    if result.resume_at is not None:
        due = command_line(["resume", "--due"], refs, store)
        now = command_line(["resume", run_id], refs, store)
        _field(console, "resumes at", f"{when(result.resume_at)}  ({due} from cron; now: {now})")
    for item in result.reviews:
        show = command_line(["review", "show", item], (), store)
        answer = command_line(["review", "resolve", item, "--value", "FILE.json"], refs, store)
        _field(console, "review", f"{item}  ({show}; answer: {answer})")
    if result.status == "failed":
        show = command_line(["dlq", "show", run_id], (), store)
        _field(
            console,
            "dead letter",
            f"{show}  (once fixed: {command_line(['dlq', 'replay', run_id], refs, store)})",
        )
    if result.outputs:
        table = DataTable("agent", "output", title="outputs", title_justify="left")
        for agent, output in result.outputs.items():
            table.add_row(agent, short(output))
        console.print(table)


def interrupted_note(record: RunRecord, now: float) -> str:
    """Why a run marked running is not going, and what continues it; empty if it is going."""
    if record.status != "running" or record.leased(now):
        return ""
    if record.lease_owner is None:
        return "interrupted: resume --due"
    return "lease expired: resume --due"


def runs_table(records: Sequence[RunRecord], now: float) -> DataTable:
    """Runs, newest first: id, workflow, status, times, and why it is not a success."""
    table = DataTable(title=counted(len(records), "run"), title_justify="left")
    table.add_column("run", overflow="fold")
    table.add_column("workflow", overflow="fold")
    # Times and statuses are never broken across lines (an update on the day of creation
    # shows its time alone, so the table fits 80 columns): ids and the note fold instead.
    table.add_column("status", no_wrap=True)
    table.add_column("created", no_wrap=True)
    table.add_column("updated", no_wrap=True)
    table.add_column("note", overflow="fold")
    for rec in records:
        note = error_line(rec.error) or interrupted_note(rec, now)
        if rec.resume_at is not None:
            due = f"resumes at {when(rec.resume_at, since=now)}"
            note = f"{due}; {note}" if note else due
        table.add_row(
            short_id(rec.run_id),
            rec.workflow,
            status_text(rec.status),
            when(rec.created_at, since=now),  # today's: the time alone, as `ls -l` does
            when(rec.updated_at, since=rec.created_at),
            note,
        )
    return table


def step_rows(steps: Mapping[str, StepRecord], workflow: Workflow | None) -> list[dict[str, Any]]:
    """One row per step: with the workflow, every agent in order (not run yet: pending).

    Without it only the committed steps are known (in commit order) and not their
    dependencies: a run record stores the workflow's name, not its code.
    """
    names: Iterable[str] = workflow.order() if workflow is not None else steps
    rows = []
    for name in names:
        rec = steps.get(name)
        row: dict[str, Any] = {
            "agent": name,
            "after": list(workflow.agents[name].after) if workflow is not None else None,
            "status": rec.status.value if rec is not None else "pending",
            "attempts": rec.attempts if rec is not None else 0,
            "error": rec.error if rec is not None else None,
            "degraded_reason": rec.degraded_reason if rec is not None else None,
            "output": rec.output if rec is not None else None,
            "seq": rec.seq if rec is not None else None,
            "completed_at": rec.completed_at if rec is not None else None,
        }
        if workflow is not None:
            row["critical"] = workflow.agents[name].critical
        rows.append(row)
    if workflow is not None:  # steps of agents the workflow no longer has
        rows.extend(
            {**jsonable(rec), "after": None, "status": rec.status.value}
            for name, rec in steps.items()
            if name not in workflow.agents
        )
    return rows


def print_run(
    console: Console,
    record: RunRecord,
    rows: Sequence[Mapping[str, Any]],
    *,
    dead_letters: Sequence[DeadLetter] = (),
    reviews: Sequence[ReviewItem] = (),
    with_dag: bool,
    now: float,
) -> None:
    """A run and its steps: agent, dependencies, status, attempts, error or reason."""
    console.print(
        Text.assemble(
            ("run ", "bold"), record.run_id, f" ({record.workflow}): ", status_text(record.status)
        ),
        highlight=False,
        soft_wrap=True,
    )
    _field(console, "created", when(record.created_at))
    _field(console, "updated", when(record.updated_at))
    if record.resume_at is not None:
        _field(console, "resumes at", when(record.resume_at))
    if record.error:
        _field(console, _error_label(record.status), error_line(record.error))
    if record.lease_owner:
        _field(console, "leased by", f"{record.lease_owner} until {when(record.lease_expires)}")
    note = interrupted_note(record, now)
    if note:
        _field(console, "note", note)
    table = DataTable(title="steps", title_justify="left")
    table.add_column("agent")
    if with_dag:
        table.add_column("after")
    table.add_column("status")
    table.add_column("attempts", justify="right")
    table.add_column("error / reason", overflow="fold")
    for row in rows:
        reason = row.get("degraded_reason") or error_line(row.get("error"))
        agent = row["agent"] if row.get("critical", True) else f"{row['agent']} (optional)"
        cells: list[str | Text] = [agent]
        if with_dag:
            cells.append(", ".join(row.get("after") or ()) or "—")
        cells += [status_text(row["status"]), str(row["attempts"]), reason or ""]
        table.add_row(*cells)
    if rows:
        console.print(table)
    else:
        console.print("no step committed")
    if not with_dag:
        console.print(
            "[dim]committed steps only; add --workflow MODULE:WORKFLOW for the whole DAG[/]"
        )
    # Commands by run id and short item ids: what `dlq` and `review` take and list.
    for entry in dead_letters:
        _field(
            console,
            "dead letter",
            f"firebreak dlq show {quote(entry.run_id)}  (or dlq replay {quote(entry.run_id)})",
        )
    for item in reviews:
        _field(
            console,
            f"review ({item.status.value})",
            f"{item.id[:SHORT_ID]}  {item.agent}: {item.reason}",
        )


def dlq_table(entries: Sequence[DeadLetter]) -> DataTable:
    """Dead-letter entries, oldest first."""
    table = DataTable(title=counted(len(entries), "dead letter"), title_justify="left")
    # By run: every dlq command takes the run's id (the entry's own is in `dlq show`).
    table.add_column("run", overflow="fold")
    table.add_column("workflow", overflow="fold")
    table.add_column("failed at", no_wrap=True)
    table.add_column("reason", overflow="fold")
    for entry in entries:
        table.add_row(short_id(entry.run_id), entry.workflow, when(entry.created_at), entry.reason)
    return table


def print_dead_letter(console: Console, entry: DeadLetter) -> None:
    """One dead-letter entry: why the run failed, its input, its steps then."""
    _field(console, "dead letter", entry.id)
    _field(console, "run", f"{entry.run_id} ({entry.workflow})")
    _field(console, "failed at", when(entry.created_at))
    _field(console, "reason", entry.reason)
    if entry.error:
        _field(console, "error", error_line(entry.error))
    _field(console, "input", short(entry.input, 400))
    if entry.steps:
        table = DataTable("agent", "status", "attempts", "error / reason", title="steps")
        for rec in entry.steps.values():
            table.add_row(
                rec.agent,
                status_text(rec.status),
                str(rec.attempts),
                rec.degraded_reason or error_line(rec.error),
            )
        console.print(table)


def review_table(items: Sequence[ReviewItem]) -> DataTable:
    """Review items, oldest first; each id cut to `SHORT_ID` characters."""
    table = DataTable(title=counted(len(items), "review item"), title_justify="left")
    # The id's start, as docker shows it: `review show|resolve` take any unique start.
    table.add_column("id", no_wrap=True)
    table.add_column("run", overflow="fold")
    table.add_column("agent", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("reason", overflow="fold")
    table.add_column("suggestions", overflow="fold", min_width=11)
    for item in items:
        table.add_row(
            item.id[:SHORT_ID],
            short_id(item.run_id),
            item.agent,
            status_text(item.status),
            item.reason,
            short(item.suggestions),
        )
    return table


def print_review(console: Console, item: ReviewItem) -> None:
    """One review item: the question, the candidate answers, the context."""
    _field(console, "review", f"{item.id} ({item.status.value})")
    _field(console, "run", f"{item.run_id} ({item.workflow}), agent {item.agent}")
    _field(console, "created", when(item.created_at))
    _field(console, "reason", item.reason)
    for number, suggestion in enumerate(item.suggestions, 1):
        _field(console, f"suggestion {number}", short(suggestion, 400))
    _field(console, "context", short(item.context, 800))
    if item.value is not None or item.resolved_at is not None:
        _field(console, "answer", short(item.value, 400))
        _field(console, "resolved", when(item.resolved_at))
