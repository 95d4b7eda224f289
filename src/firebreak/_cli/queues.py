"""``firebreak dlq`` and ``firebreak review``: the two queues where runs wait for people."""

from __future__ import annotations

from pathlib import Path
from shlex import quote
from typing import Annotated

import typer

from firebreak.engine import Engine, RunResult
from firebreak.store import (
    CheckpointStore,
    DeadLetter,
    ReviewItem,
    ReviewStatus,
    RunRecord,
    find_dead_letter,
    find_run_id,
    open_store,
)

from .common import InputFile, Json, Store, console, err_console, finish, require_store
from .exits import CliError, ExitCode, cli_errors, exit_code, run_async
from .loading import load_workflow, read_json
from .progress import RunProgress
from .render import (
    dead_letter_json,
    dlq_table,
    print_dead_letter,
    print_review,
    review_table,
    write_json,
)

__all__ = ["dlq_app", "review_app"]

dlq_app = typer.Typer(
    help="The dead-letter queue: failed runs, kept to be replayed.", no_args_is_help=True
)
review_app = typer.Typer(
    help="The manual-review queue: steps waiting for a person.", no_args_is_help=True
)


async def find_review(store: CheckpointStore, key: str) -> ReviewItem:
    """The review item with id `key`, else the one item whose id starts with it.

    Raises:
        CliError: no item, or several, match.
    """
    item = await store.review_get(key)
    if item is not None:
        return item
    found = [i for i in await store.review_list(status=None) if key and i.id.startswith(key)]
    if len(found) == 1:
        return found[0]
    if found:
        raise CliError(f"{key!r} is the start of {len(found)} review items' ids: give more of it")
    raise CliError(f"no review item {key!r}")


# -- the dead-letter queue -----------------------------------------------------------------


async def _dead_letter(store: CheckpointStore, key: str) -> DeadLetter | None:
    """The entry `key` names: its id, its run's id, or a unique start of a made-up run id."""
    entry = await find_dead_letter(store, key)
    if entry is not None:
        return entry
    run_id = await find_run_id(store, key)
    return None if run_id == key else await store.dlq_of_run(run_id)  # `key`: asked already


@dlq_app.command("list")
def dlq_list(
    *,
    workflow: Annotated[
        str | None, typer.Option("--workflow", metavar="NAME", help="Only this workflow's.")
    ] = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """List dead-lettered runs, oldest first."""
    with cli_errors(err_console):
        require_store(store)

        async def go() -> list[DeadLetter]:
            async with open_store(store) as opened:
                return await opened.dlq_list(workflow)

        entries = run_async(go())
    if as_json:
        write_json([dead_letter_json(entry) for entry in entries])
    else:
        console.print(dlq_table(entries).or_title())


@dlq_app.command("show")
def dlq_show(
    entry_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="The entry's id, or its run's id (or a unique start of that)."
        ),
    ],
    *,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Show a dead-letter entry: why the run failed, its input and its steps."""
    with cli_errors(err_console):
        require_store(store)

        async def go() -> DeadLetter:
            async with open_store(store) as opened:
                entry = await _dead_letter(opened, entry_id)
            if entry is None:
                raise CliError(f"no dead-letter entry {entry_id!r}")
            return entry

        entry = run_async(go())
    if as_json:
        write_json(dead_letter_json(entry))
    else:
        print_dead_letter(console, entry)


@dlq_app.command("replay")
def dlq_replay(
    entry_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="The entry's id, or its run's id (or a unique start of that)."
        ),
    ],
    *,
    workflow_ref: Annotated[
        str,
        typer.Option(
            "--workflow",
            "-w",
            metavar="MODULE:WORKFLOW",
            help="The code of the run's workflow.",
        ),
    ],
    from_step: Annotated[
        str | None,
        typer.Option(
            "--from-step", metavar="AGENT", help="Also run this agent and all after it again."
        ),
    ] = None,
    input_file: InputFile = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Run a dead-lettered run again from its checkpoints; exit with its status code.

    Failed, skipped and compensated steps run again (and --from-step's agent and its
    dependents); a patched --input makes every step run again.
    """
    with cli_errors(err_console):
        require_store(store)
        workflow = load_workflow(workflow_ref)
        patched = read_json(input_file) if input_file is not None else None

        async def go() -> RunResult:
            async with Engine(store) as engine:
                entry = await _dead_letter(engine.store, entry_id)
                key = entry_id if entry is None else entry.id  # unknown: the engine says so
                with RunProgress(
                    err_console, f"replay {key} ({workflow.name})", total=len(workflow.agents)
                ):
                    if input_file is None:
                        return await engine.replay(key, workflow, from_step=from_step)
                    return await engine.replay(key, workflow, from_step=from_step, input=patched)

        result = run_async(go())
    finish(result, as_json=as_json, refs=[workflow_ref], store=store)


@dlq_app.command("drop")
def dlq_drop(
    entry_id: Annotated[
        str,
        typer.Argument(
            metavar="ID", help="The entry's id, or its run's id (or a unique start of that)."
        ),
    ],
    *,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Remove an entry from the dead-letter queue (the run stays failed)."""
    with cli_errors(err_console):
        require_store(store)

        async def go() -> DeadLetter | None:
            async with open_store(store) as opened:
                entry = await _dead_letter(opened, entry_id)
                return entry if entry is not None and await opened.dlq_drop(entry.id) else None

        dropped = run_async(go())
        if dropped is None:
            raise CliError(f"no dead-letter entry {entry_id!r}")
    if as_json:
        write_json({"dropped": dropped.id, "run_id": dropped.run_id})
    else:
        console.print(f"dropped the entry of run {dropped.run_id}", highlight=False, markup=False)


# -- the review queue ----------------------------------------------------------------------


@review_app.command("list")
def review_list(
    *,
    show_all: Annotated[
        bool, typer.Option("--all", help="Resolved items too, not only open ones.")
    ] = False,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """List review items waiting for a person, oldest first."""
    with cli_errors(err_console):
        require_store(store)

        async def go() -> list[ReviewItem]:
            async with open_store(store) as opened:
                return await opened.review_list(status=None if show_all else "open")

        items = run_async(go())
    if as_json:
        write_json(items)
    else:
        console.print(review_table(items).or_title())


@review_app.command("show")
def review_show(
    key: Annotated[
        str, typer.Argument(metavar="ID", help="The item's id, or a unique start of it.")
    ],
    *,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Show a review item: the question, the suggested answers, the agent's inputs."""
    with cli_errors(err_console):
        require_store(store)

        async def go() -> ReviewItem:
            async with open_store(store) as opened:
                return await find_review(opened, key)

        item = run_async(go())
    if as_json:
        write_json(item)
    else:
        print_review(console, item)


@review_app.command("resolve")
def review_resolve(
    key: Annotated[
        str, typer.Argument(metavar="ID", help="The item's id, or a unique start of it.")
    ],
    *,
    value_file: Annotated[
        Path,
        typer.Option(
            "--value",
            metavar="FILE.json",
            help="The answer, as a JSON file ('-': standard input).",
        ),
    ],
    workflow_ref: Annotated[
        str | None,
        typer.Option(
            "--workflow",
            "-w",
            metavar="MODULE:WORKFLOW",
            help="Validate the answer with the agent's validate= and resume the run now.",
        ),
    ] = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Answer a review item; with --workflow, check the answer and resume the run.

    Without --workflow the answer is only recorded and the run uses it when it resumes;
    with it, the exit code is that of the run's status afterwards.
    """
    with cli_errors(err_console):
        require_store(store)
        workflow = load_workflow(workflow_ref) if workflow_ref is not None else None
        value = read_json(value_file)

        async def go() -> tuple[ReviewItem, RunRecord | None]:
            async with Engine(store) as engine:
                item = await find_review(engine.store, key)
                item_id = item.id
                if item.status == ReviewStatus.RESOLVED:
                    raise CliError(f"review item {item_id!r} is already resolved")
                if workflow is not None and workflow.name != item.workflow:
                    raise CliError(
                        f"review item {item_id!r} belongs to workflow {item.workflow!r}, "
                        f"not {workflow.name!r}"
                    )
                with RunProgress(err_console, f"resolve {item_id}"):
                    resolved = await engine.resolve_review(item_id, value, workflow=workflow)
                run = await engine.store.get_run(item.run_id) if workflow is not None else None
                return resolved, run

        resolved, run = run_async(go())
    item_id = resolved.id
    code = exit_code(run.status) if run is not None else ExitCode.OK
    if as_json:
        write_json({"item": resolved, "run": run})
    elif run is None:
        console.print(
            f"recorded the answer to {item_id}; run {resolved.run_id} uses it when resumed "
            f"(firebreak resume {quote(resolved.run_id)} --workflow MODULE:WORKFLOW, or the next "
            "firebreak resume --due)",
            highlight=False,
        )
    else:
        console.print(
            f"recorded the answer to {item_id}; run {run.run_id}: {run.status.value}",
            highlight=False,
        )
    raise typer.Exit(code)
