"""The ``firebreak`` command line: a thin shell over the public API.

Every command opens the store named by ``--store`` (default: ``$FIREBREAK_STORE``, else
``sqlite:///./.firebreak/firebreak.db``) and calls `firebreak.Engine` or the
`CheckpointStore` protocol; nothing here reaches further in. A workflow is named
``MODULE:WORKFLOW`` and imported with the current directory on ``sys.path``::

    firebreak run flows:invoice --input invoice.json --run-id inv-42
    firebreak show inv-42 --workflow flows:invoice
    firebreak dlq replay ENTRY --workflow flows:invoice
    firebreak review resolve ITEM --value answer.json --workflow flows:invoice
    firebreak resume --due --workflow flows:invoice --workflow flows:refund

Commands that print data take ``--json``: then stdout holds one JSON document and
nothing else. Progress and errors go to stderr; an expected error is one line there.

Exit codes (stable; scripts may branch on them):

    0  succeeded (commands that only read or record: done)
    1  the run failed (it is in the dead-letter queue)
    2  usage or configuration error: bad option, file, MODULE:WORKFLOW, id, store URL
    3  the run degraded (optional agents fell back to their defaults)
    4  the run is paused until a service recovers
    5  the run waits for a person (review queue)
    6  store or bus error: corrupt or foreign file, run leased by another process, a
       store or bus out of reach
  130  stopped by Ctrl-C, 143 by SIGTERM: runs in progress keep their committed steps

With several runs (``resume --due``) the worst code wins: 1 > 5 > 4 > 3 > 0.
"""

from __future__ import annotations

import collections
import importlib
import inspect
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from firebreak._cli import chaos as chaos_cli
from firebreak._cli import check as check_cli
from firebreak._cli import observe as observe_cli
from firebreak._cli import worker as worker_cli
from firebreak._cli.common import (
    SIGPIPE_EXIT,
    InputFile,
    Json,
    Store,
    WorkflowOpt,
    WorkflowRef,
    console,
    err_console,
    finish,
    reflow_help,
    require_store,
)
from firebreak._cli.exits import (
    EXIT_CODES_HELP,
    CliError,
    ExitCode,
    cli_errors,
    run_async,
    worst_exit_code,
)
from firebreak._cli.loading import load_workflow, load_workflows, read_json
from firebreak._cli.progress import RunProgress
from firebreak._cli.queues import dlq_app, review_app
from firebreak._cli.render import (
    command_line,
    counted,
    print_result,
    print_run,
    result_json,
    runs_table,
    step_rows,
    when,
    write_json,
)
from firebreak._version import __version__
from firebreak.engine import Engine, RunResult
from firebreak.store import CheckpointStore, RunRecord, RunStatus, find_run_id, open_store
from firebreak.workflow import Workflow

__all__ = ["app", "console", "err_console", "main"]

app = typer.Typer(
    name="firebreak",
    help="Keep multi-agent workflows alive when their parts fail.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
demo_app = typer.Typer(help="Runnable demonstrations on simulated services.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")
app.add_typer(dlq_app, name="dlq")
app.add_typer(review_app, name="review")


async def _find_run(store: CheckpointStore, key: str) -> RunRecord:
    """The run `key` names: its id, or a unique start of it (`find_run_id`)."""
    record = await store.get_run(await find_run_id(store, key))
    if record is None:
        raise CliError(f"no run {key!r} in this store")
    return record


_LEASED_SHOWN = 3


async def _leased(engine: Engine, workflows: dict[str, Workflow]) -> list[RunRecord]:
    """Running runs of `workflows` whose lease is live.

    An orchestrator holds them, or held them until it died and its lease has yet to expire:
    a user who just killed one must wait that long.
    """
    now = engine.store.clock()
    running = await engine.store.list_runs(status=RunStatus.RUNNING, limit=1_000)
    return [record for record in running if record.workflow in workflows and record.leased(now)]


def _say_leased(leased: list[RunRecord]) -> None:
    for record in leased[:_LEASED_SHOWN]:
        console.print(
            f"{record.run_id} is leased by {record.lease_owner} until "
            f"{when(record.lease_expires)}: if that process is gone, --due resumes it then",
            highlight=False,
        )
    if len(leased) > _LEASED_SHOWN:
        console.print(f"and {counted(len(leased) - _LEASED_SHOWN, 'more leased run')}")


def _say_left(left: list[RunRecord]) -> None:
    by_workflow = collections.Counter(record.workflow for record in left)
    names = ", ".join(f"{name!r} ({count})" for name, count in sorted(by_workflow.items()))
    err_console.print(
        f"[bold red]error:[/] {counted(len(left), 'run')} to resume left as they are, of "
        f"workflows not given: {escape(names)}; add --workflow MODULE:WORKFLOW for each",
        highlight=False,
    )


def _resume_command(target: str, refs: Sequence[str]) -> str:
    """The command that continues where this one stopped (`target`: a run id or --due)."""
    return command_line(["resume", target], refs)


def _pick(workflows: dict[str, Workflow], record: RunRecord, what: str) -> Workflow:
    """The workflow among those given that `record` belongs to."""
    workflow = workflows.get(record.workflow)
    if workflow is None:
        given = ", ".join(repr(name) for name in workflows) or "none"
        raise CliError(
            f"{what} {record.run_id!r} belongs to workflow {record.workflow!r}: "
            f"pass --workflow MODULE:WORKFLOW naming its code (given: {given})"
        )
    return workflow


# -- the root ------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        console.print(f"firebreak {__version__}")
        raise typer.Exit


@app.callback()
def root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the version."
    ),
) -> None:
    """Keep multi-agent workflows alive when their parts fail."""


# -- run, resume ---------------------------------------------------------------------------


@app.command("run")
def run_command(
    workflow_ref: WorkflowRef,
    *,
    input_file: InputFile = None,
    run_id: Annotated[
        str | None,
        typer.Option("--run-id", help="The run's id (default: random); an existing run continues."),
    ] = None,
    store: Store = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            envvar="FIREBREAK_BUS",
            help="Run the steps on `firebreak worker` processes through this bus "
            "(redis://..., inproc://...); default: in this process.",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Run a workflow on an input; exit with the run's status code."""
    with cli_errors(err_console):
        workflow = load_workflow(workflow_ref)
        if input_file is None and run_id is None:
            raise CliError("give the run's input with --input FILE.json")
        value = read_json(input_file) if input_file is not None else None
        if run_id is None:  # a blank one is the engine's to refuse (exit 2)
            run_id = uuid.uuid4().hex

        async def go() -> RunResult:
            async with Engine(store, bus=bus) as engine:
                with RunProgress(
                    err_console, f"run {run_id} ({workflow.name})", total=len(workflow.agents)
                ):
                    if input_file is None:  # continue an existing run
                        return await engine.run(workflow, run_id=run_id)
                    return await engine.run(workflow, value, run_id=run_id)

        result = run_async(go(), resume=_resume_command(run_id, [workflow_ref]))
    finish(result, as_json=as_json, refs=[workflow_ref], store=store)


@app.command("resume")
def resume_command(
    run_id: Annotated[
        str | None,
        typer.Argument(
            metavar="[RUN_ID]", help="The run to continue: its id, or a unique start of it."
        ),
    ] = None,
    *,
    due: Annotated[
        bool,
        typer.Option(
            "--due",
            help="Resume every paused run whose time has come, every run whose review "
            "questions were all answered, and every interrupted run (its orchestrator died "
            "or gave up: lease expired or released).",
        ),
    ] = False,
    workflow_refs: Annotated[
        list[str] | None,
        typer.Option(
            "--workflow",
            "-w",
            metavar="MODULE:WORKFLOW",
            help="The code of the run's workflow (repeat with --due, one per workflow).",
        ),
    ] = None,
    concurrency: Annotated[
        int,
        typer.Option("--concurrency", "-c", min=1, help="With --due: runs resumed at once."),
    ] = 16,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Continue a run from its checkpoints, or (--due) every run that should be going.

    --due resumes paused runs whose time has come, runs whose review questions were all
    answered, and interrupted runs: left running by an orchestrator that died (once its
    lease expires) or gave up. Run it from cron or a systemd timer to recover from crashes
    without knowing the run ids. A run record keeps the workflow's name, not its code:
    pass --workflow.
    """
    with cli_errors(err_console):
        if (run_id is None) == (not due):
            raise CliError("give either RUN_ID or --due")
        require_store(store)
        workflows = load_workflows(workflow_refs or ())
        if due:
            if not workflows:
                raise CliError("--due needs the workflows' code: pass --workflow MODULE:WORKFLOW")

            async def go_due() -> tuple[list[RunResult], list[RunRecord], list[RunRecord]]:
                async with Engine(store) as engine:
                    due_runs = await engine.due()  # read once; this command names the rest
                    with RunProgress(err_console, "resuming due runs", many=True):
                        results = await engine.resume_due(
                            workflows, concurrency=concurrency, due=due_runs
                        )
                    leased = [] if results else await _leased(engine, workflows)
                    left = [r for r in due_runs if r.workflow not in workflows]
                    return results, leased, left

            results, leased, left = run_async(
                go_due(), resume=_resume_command("--due", workflow_refs or ())
            )
            if as_json:
                write_json([result_json(result) for result in results])
            else:
                for result in results:
                    print_result(console, result, workflow_refs or (), store)
                if not results and not left:
                    console.print(
                        "nothing to resume: no paused run is due, none answered, none interrupted"
                    )
                _say_leased(leased)
            if left:  # on stderr and in the exit code: cron must not take it for done
                _say_left(left)
                raise typer.Exit(ExitCode.USAGE)
            raise typer.Exit(worst_exit_code(result.status for result in results))
        assert run_id is not None  # noqa: S101 - checked above; narrows the type

        async def go() -> RunResult:
            async with Engine(store) as engine:
                record = await _find_run(engine.store, run_id)
                if not workflows:
                    raise CliError(
                        f"resuming needs the workflow's code: pass --workflow MODULE:WORKFLOW "
                        f"(run {record.run_id!r} belongs to workflow {record.workflow!r})"
                    )
                workflow = _pick(workflows, record, "run")
                with RunProgress(
                    err_console,
                    f"run {record.run_id} ({workflow.name})",
                    total=len(workflow.agents),
                ):
                    return await engine.resume(workflow, record.run_id)

        result = run_async(go(), resume=_resume_command(run_id, workflow_refs or ()))
    if result.status == RunStatus.FAILED and not result.executed:  # read back, not driven
        replay = command_line(["dlq", "replay", result.run_id], workflow_refs or ())
        err_console.print(
            f"run {result.run_id} had already failed: a failed run is not resumed but replayed "
            f"from the dead-letter queue: {replay}",
            highlight=False,
            markup=False,
        )
    finish(result, as_json=as_json, refs=workflow_refs or (), store=store)


# -- runs, show ----------------------------------------------------------------------------


@app.command("runs")
def runs_command(
    *,
    status: Annotated[
        RunStatus | None, typer.Option("--status", help="Only runs with this status.")
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", metavar="NAME", help="Only runs of this workflow.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many runs.")] = 20,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """List runs, newest first."""
    with cli_errors(err_console):
        require_store(store)

        async def go() -> list[RunRecord]:
            async with open_store(store) as opened:
                return await opened.list_runs(
                    workflow=workflow, status=None if status is None else status.value, limit=limit
                )

        records = run_async(go())
    if as_json:
        write_json(records)
    else:
        console.print(runs_table(records, now=time.time()).or_title())
        if len(records) == limit:  # there may be more: say so rather than let it look like all
            console.print(f"[dim]the newest {limit}; --limit N for more[/]")


@app.command("show")
def show_command(
    run_id: Annotated[str, typer.Argument(help="The run's id, or a unique start of it.")],
    *,
    workflow_ref: WorkflowOpt = None,
    store: Store = None,
    as_json: Json = False,
) -> None:
    """Show a run: each step's status, attempts, error or degraded reason.

    With --workflow, every agent of the DAG is shown with its dependencies, including
    those that have not run yet.
    """
    with cli_errors(err_console):
        require_store(store)
        workflow = load_workflow(workflow_ref) if workflow_ref is not None else None

        async def go() -> dict[str, Any]:
            async with open_store(store) as opened:
                record = await _find_run(opened, run_id)
                if workflow is not None and workflow.name != record.workflow:
                    raise CliError(
                        f"run {record.run_id!r} belongs to workflow {record.workflow!r}, "
                        f"not {workflow.name!r}"
                    )
                dead = await opened.dlq_of_run(record.run_id)
                reviews = await opened.review_of_run(record.run_id)
                return {
                    "run": record,
                    "steps": step_rows(await opened.get_steps(record.run_id), workflow),
                    "dead_letters": [] if dead is None else [dead],
                    "reviews": reviews,
                }

        shown = run_async(go())
    if as_json:
        write_json(
            {
                "run": shown["run"],
                "steps": shown["steps"],
                "dead_letters": [entry.id for entry in shown["dead_letters"]],
                "reviews": shown["reviews"],
            }
        )
        return
    print_run(
        console,
        shown["run"],
        shown["steps"],
        dead_letters=shown["dead_letters"],
        reviews=shown["reviews"],
        with_dag=workflow is not None,
        now=time.time(),  # the stores' clock: leases expire by it
    )


# -- demos ---------------------------------------------------------------------------------


@demo_app.command("resilience")
def demo_resilience(
    requests: int = typer.Option(300, "--n", min=1, help="Requests to send."),
    seed: int = typer.Option(7, help="Seed of the fault schedule."),
) -> None:
    """A flaky model API, called naively and through a firebreak pipeline (virtual time)."""
    from firebreak.demos.resilience import run_demo

    reports = run_demo(requests, seed)
    table = Table(
        title=f"{requests} requests to a flaky model API (seed {seed}, same faults)",
        caption="fallback: answered from cache; calls: reached the service; "
        "shed: rejected by the open breaker; sim s: simulated seconds",
    )
    columns = (
        "run",
        "answered",
        "fallback",
        "failed",
        "calls",
        "retries",
        "shed",
        "trips",
        "sim s",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "run" else "left")
    for r in reports:
        table.add_row(
            r.label,
            f"{r.answered} ({r.answered / r.requests:.0%})",
            str(r.from_fallback),
            str(r.failed),
            str(r.service_calls),
            str(r.retries),
            str(r.rejected_by_breaker),
            str(r.breaker_trips),
            f"{r.simulated_seconds:.0f}",
        )
    console.print(table)


@demo_app.command("invoices")
def demo_invoices(
    n: Annotated[int, typer.Option("--n", min=1, help="Invoices to process.")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the simulated faults.")] = 7,
    time_scale: Annotated[
        float,
        typer.Option(
            "--time-scale",
            min=0.0,
            help="0: virtual time; else real seconds per simulated second (e.g. 0.001).",
        ),
    ] = 0.0,
    store: Store = None,
) -> None:
    """An invoice-processing workflow of agents on flaky simulated services."""
    with cli_errors(err_console):
        try:  # imported by name: the demo is optional and heavy; --help stays fast
            invoices = importlib.import_module("firebreak.demos.invoices")
        except ImportError as exc:
            raise CliError(f"the invoices demo is not available: {exc}") from None
        outcome = invoices.main(n=n, seed=seed, time_scale=time_scale, store=store)
        if inspect.isawaitable(outcome):
            outcome = run_async(_await(outcome))
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        raise typer.Exit(outcome)


async def _await(awaitable: Any) -> Any:
    return await awaitable


# Registered last so `firebreak --help` lists the run commands first.
check_cli.register(app)
chaos_cli.register(app)
observe_cli.register(app)
worker_cli.register(app)
reflow_help(app)


def main() -> None:
    """Entry point of the ``firebreak`` script and of ``python -m firebreak``.

    When the reader of stdout goes away (``firebreak runs --json | head -1``), Click and
    Typer swap stdout for a quiet wrapper and exit 1, which here means "the run failed":
    exit 141 instead (`SIGPIPE_EXIT`; the consoles do the same). Not by restoring
    SIGPIPE's default action: that would also kill the process on a broken socket to a
    store, with no message.
    """
    stdout = sys.stdout
    try:
        app()
    except SystemExit as exc:
        if exc.code == 1 and sys.stdout is not stdout:
            raise SystemExit(SIGPIPE_EXIT) from None
        raise
