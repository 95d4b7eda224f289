"""``firebreak chaos``: run the standard chaos scenarios on a workflow and report.

``firebreak chaos run TARGET --scenario NAME`` exits 0 when every scenario passes (or is
skipped, saying why: ``worker-kill`` without a Redis ``--bus``), 1 when one fails, 2 on a
usage error. TARGET is ``MODULE:ATTR`` naming a `firebreak.chaos.Target`
(or a function returning one, e.g. ``firebreak.chaos:invoices``), or a `Workflow`
together with ``--input FILE.json`` (one input, or a list of inputs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from firebreak.chaos import (
    PROCESS_SCENARIOS,
    SCENARIOS,
    STANDARD,
    ChaosOptions,
    ScenarioReport,
    Target,
    load_faults,
    of_workflow,
    run_scenario,
    write_chart,
)
from firebreak.errors import ConfigError
from firebreak.workflow import Workflow

from .common import Json, console, err_console
from .exits import CliError, ExitCode, cli_errors
from .loading import import_ref, read_json
from .render import write_json

__all__ = ["chaos_app", "register"]

chaos_app = typer.Typer(
    help="Seeded fault injection: the standard chaos scenarios.", no_args_is_help=True
)


def _target(ref: str, input_file: Path | None) -> Target:
    obj = import_ref(ref, (Target, Workflow), "e.g. firebreak.chaos:invoices")
    if isinstance(obj, Workflow):
        if input_file is None:
            raise CliError(f"{ref!r} is a workflow: give its inputs with --input FILE.json")
        data = read_json(input_file)
        return of_workflow(obj, data if isinstance(data, list) else [data], ref=ref)
    if not isinstance(obj, Target) and callable(obj):
        obj = obj()
    if not isinstance(obj, Target):
        raise CliError(f"{ref!r} is neither a firebreak.chaos.Target nor a Workflow")
    found: Target = obj
    if found.ref is None:  # the process scenarios rebuild it in a child from the same ref
        found = dataclasses.replace(found, ref=ref)
    return found


def _parse_sets(sets: list[str]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for item in sets:
        key, eq, raw = item.partition("=")
        agent, dot, option = key.partition(".")
        if not eq or not dot or not agent or not option:
            raise CliError(f"--set {item!r}: write AGENT.OPTION=VALUE, e.g. archive.bulkhead=10")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(agent, {})[option] = value
    return out


def _print(report: ScenarioReport) -> None:
    if report.skipped is not None:
        console.print(
            f"chaos {report.scenario} on {escape(report.workflow)}: [yellow]SKIPPED[/] — "
            f"{escape(report.skipped)}",
            soft_wrap=True,
        )
        return
    verdict = "[green]PASS[/]" if report.passed else "[bold red]FAIL[/]"
    table = Table(
        title=f"chaos {report.scenario} on {escape(report.workflow)}: {verdict}",
        caption=f"{report.time} seconds",
    )
    for column in report.counts():
        table.add_column(column, justify="right")
    table.add_row(*(str(v) for v in report.counts().values()))
    console.print(table)
    for criterion in report.criteria:
        mark = "[green]✓[/]" if criterion.passed else "[bold red]✗[/]"
        console.print(f" {mark} {escape(criterion.name)}: {escape(criterion.detail)}")
    figures = ", ".join(
        f"{k} {v:.2f}" if isinstance(v, float) and not v.is_integer() else f"{k} {v:g}"
        for k, v in report.figures.items()
    )
    console.print(f"   figures: {escape(figures)}", highlight=False)
    for fault in report.faults:
        console.print(f"   fault: {escape(fault)}", highlight=False)
    for agent, options in report.overrides.items():
        console.print(f"   scenario override: {escape(agent)} {escape(str(options))}")
    for note in report.notes:
        console.print(f"   [yellow]note:[/] {escape(note)}", soft_wrap=True)


@chaos_app.command("list")
def list_command(*, as_json: Json = False) -> None:
    """List the scenarios."""
    scenarios = [
        {
            "name": name,
            "processes": name in PROCESS_SCENARIOS,
            "summary": (fn.__doc__ or "").splitlines()[0],
        }
        for name, fn in SCENARIOS.items()
    ]
    if as_json:
        write_json(scenarios)
        return
    for s in scenarios:
        kind = " (real processes)" if s["processes"] else ""
        console.print(f"{s['name']}{kind}: {s['summary']}", highlight=False)


@chaos_app.command("run")
def run_command(
    target_ref: Annotated[
        str,
        typer.Argument(
            metavar="MODULE:TARGET",
            help="A chaos Target (e.g. firebreak.chaos:invoices) or a Workflow with --input.",
        ),
    ],
    *,
    scenario: Annotated[
        list[str],
        typer.Option(
            "--scenario",
            "-s",
            help=f"Scenario ({', '.join(SCENARIOS)}), or all (the in-process four).",
        ),
    ],
    n: Annotated[int, typer.Option("--n", min=1, help="Runs at the normal rate.")] = 60,
    seed: Annotated[int, typer.Option("--seed", help="Seed of every fault draw.")] = 7,
    real_time: Annotated[
        bool, typer.Option("--real-time", help="Real seconds (a 5-minute outage lasts 5 minutes).")
    ] = False,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            metavar="URL",
            help="Checkpoint store URL (default: memory:// in process, with --real-time "
            "only; a temporary SQLite file for the process scenarios). $FIREBREAK_STORE is "
            "not read: a scenario never writes to the store of real runs by accident.",
            show_default=False,
        ),
    ] = None,
    input_file: Annotated[
        Path | None,
        typer.Option("--input", "-i", metavar="FILE.json", help="Inputs of a workflow."),
    ] = None,
    faults_file: Annotated[
        Path | None,
        typer.Option("--faults", metavar="FILE", help="Extra faults (YAML, TOML or JSON)."),
    ] = None,
    sets: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="AGENT.OPTION=VALUE", help="Override an agent option."),
    ] = None,
    agent: Annotated[
        str | None, typer.Option("--agent", help="The agent to hit (default: the target's).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", metavar="FILE.json", help="Write JSON here.")
    ] = None,
    chart: Annotated[
        Path | None, typer.Option("--chart", metavar="FILE.png", help="Draw the report as PNG.")
    ] = None,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus", metavar="URL", help="worker-kill: the redis:// bus the workers share."
        ),
    ] = None,
    kills: Annotated[
        int, typer.Option("--kills", min=1, help="Process scenarios: SIGKILLs (or a kill fault).")
    ] = 3,
    workers: Annotated[
        int, typer.Option("--workers", min=1, help="worker-kill: worker processes.")
    ] = 3,
    time_scale: Annotated[
        float | None,
        typer.Option(
            "--time-scale",
            min=0.0001,
            help="Process scenarios: real seconds per simulated second of the services "
            "(default 0.01 orchestrator-kill, 0.05 worker-kill).",
        ),
    ] = None,
    as_json: Json = False,
) -> None:
    """Run chaos scenarios; exit 1 if any fails.

    orchestrator-kill and worker-kill run real child processes on a durable store (a
    SQLite file in a temporary directory, or --store) and SIGKILL them mid-batch; the
    other scenarios run in this process.

    With several scenarios, --output and --chart get the scenario's name inserted
    (report.agent-timeout.json).
    """
    with cli_errors(err_console):
        names = [*STANDARD, *(s for s in scenario if s != "all")] if "all" in scenario else scenario
        names = list(dict.fromkeys(names))
        if unknown := [s for s in names if s not in SCENARIOS]:
            raise CliError(f"unknown scenarios {unknown}; known: {', '.join(SCENARIOS)}, all")
        in_process = [s for s in names if s not in PROCESS_SCENARIOS]
        if store is not None and not real_time and in_process:
            raise CliError(
                f"--store needs --real-time for {', '.join(in_process)} (virtual time runs on "
                "a memory store); the process scenarios take it as is"
            )
        target = _target(target_ref, input_file)
        try:
            faults = tuple(load_faults(faults_file)) if faults_file is not None else ()
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        options = ChaosOptions(
            n=n,
            seed=seed,
            real_time=real_time,
            store=store,
            agent=agent,
            faults=faults,
            overrides=_parse_sets(sets or []),
            bus=bus,
            kills=kills,
            workers=workers,
            time_scale=time_scale,
        )

        async def go() -> list[ScenarioReport]:
            return [await run_scenario(name, target, options) for name in names]

        try:
            reports = asyncio.run(go())
        except (KeyError, ConfigError, ValueError) as exc:
            raise CliError(str(exc.args[0]) if exc.args else str(exc)) from None
    for report in reports:
        suffix = f".{report.scenario}" if len(reports) > 1 else ""
        if output is not None:
            report.write_json(output.with_name(f"{output.stem}{suffix}{output.suffix}"))
        if chart is not None:
            write_chart(report, chart.with_name(f"{chart.stem}{suffix}{chart.suffix}"))
        if not as_json:
            _print(report)
    if as_json:
        write_json([r.as_dict() for r in reports] if len(reports) > 1 else reports[0].as_dict())
    ok = all(r.passed or r.skipped is not None for r in reports)
    raise typer.Exit(ExitCode.OK if ok else ExitCode.FAILED)


def register(app: typer.Typer) -> None:
    """Add the ``chaos`` command group to the ``firebreak`` app."""
    app.add_typer(chaos_app, name="chaos")
