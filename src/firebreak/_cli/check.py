"""``firebreak check`` and ``firebreak analyze``: lint a workflow for production, analyse it.

``check`` exits 1 when it finds an error (``--strict``: a warning too), 2 on a usage
error, else 0. ``analyze`` exits 0, or 2 on a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from firebreak.analysis import RULES, analyze, check, load_config, load_rates
from firebreak.errors import ConfigError

from .common import Json, Store, WorkflowRef, console, err_console
from .exits import CliError, ExitCode, cli_errors
from .loading import load_workflow
from .render import counted, write_json

__all__ = ["register"]

ConfigFile = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE.toml",
        help="Deployment config (default: ./firebreak.toml if present).",
        show_default=False,
    ),
]


def _rule_list() -> str:
    return "\n\n".join(f"{r.code} ({r.severity.value}) {r.name}: {r.summary}" for r in RULES)


def check_command(
    workflow_ref: WorkflowRef,
    *,
    config_file: ConfigFile = None,
    store: Store = None,
    ignore: Annotated[
        list[str] | None,
        typer.Option("--ignore", metavar="CODE", help="Do not report this rule (repeatable)."),
    ] = None,
    select: Annotated[
        list[str] | None,
        typer.Option("--select", metavar="CODE", help="Report only this rule (repeatable)."),
    ] = None,
    strict: Annotated[bool, typer.Option("--strict", help="Warnings fail too.")] = False,
    as_json: Json = False,
) -> None:
    """Check a workflow and its deployment config against the production checklist.

    Exit 1 if an error is found (with --strict: a warning too), else 0.
    """
    with cli_errors(err_console):
        workflow = load_workflow(workflow_ref)
        try:
            config = load_config(config_file, store=store)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
        codes = {r.code for r in RULES}
        if unknown := sorted({c.upper() for c in [*(ignore or []), *(select or [])]} - codes):
            raise CliError(f"unknown rule codes {unknown}; known: {', '.join(sorted(codes))}")
        report = check(workflow, config, select=select, ignore=ignore or ())
    failed = not report.ok or (strict and bool(report.warnings))
    if as_json:
        write_json(report.as_dict() | {"config": str(config.path) if config.path else None})
    else:
        for f in report.findings:
            style = "bold red" if f.severity.value == "error" else "yellow"
            where = " " + escape(f"[{f.agent}]") if f.agent else ""
            console.print(
                f"[{style}]{f.code} {f.severity.value}[/]{where} {escape(f.message)}\n"
                f"    fix: {escape(f.fix)}",
                highlight=False,
                soft_wrap=True,
            )
        verdict = "[bold red]fails[/]" if failed else "[green]passes[/]"
        console.print(
            f"{escape(workflow.name)}: {counted(len(report.errors), 'error')}, "
            f"{counted(len(report.warnings), 'warning')} — {verdict} the production checks",
            highlight=False,
        )
    raise typer.Exit(ExitCode.FAILED if failed else ExitCode.OK)


check_command.__doc__ = f"{check_command.__doc__}\n\nRules:\n\n{_rule_list()}"


def analyze_command(
    workflow_ref: WorkflowRef,
    *,
    rates_file: Annotated[
        Path | None,
        typer.Option(
            "--rates",
            metavar="FILE",
            help="Per-attempt success rates: JSON/TOML/YAML, a number or agent: rate "
            "(with 'default' for the rest).",
            show_default=False,
        ),
    ] = None,
    rate: Annotated[
        float,
        typer.Option("--rate", min=0.0, max=1.0, help="Success rate of every agent (no --rates)."),
    ] = 0.95,
    as_json: Json = False,
) -> None:
    """Blast radius of each agent, and end-to-end success with and without the patterns."""
    with cli_errors(err_console):
        workflow = load_workflow(workflow_ref)
        try:
            rates = load_rates(rates_file) if rates_file is not None else rate
            analysis = analyze(workflow, rates)
        except ConfigError as exc:
            raise CliError(str(exc)) from None
    if as_json:
        write_json(analysis.as_dict())
        raise typer.Exit(ExitCode.OK)
    blast = Table(title=f"blast radius: {workflow.name}")
    for column in ("agent", "rate", "if it fails", "skipped", "degraded inputs"):
        blast.add_column(column)
    for b in analysis.blast:
        blast.add_row(
            b.agent,
            f"{analysis.rates[b.agent]:.3f}",
            "[red]run fails[/]" if b.fails_run else "[yellow]degrades[/]",
            ", ".join(b.skipped) or "-",
            ", ".join(b.degraded_inputs) or "-",
        )
    console.print(blast)
    table = Table(
        title="end-to-end estimate (independent failures: an upper bound)",
        caption="success = succeeded or degraded; complete = no agent degraded",
    )
    for column in ("patterns", "success", "complete", "degraded", "failed"):
        table.add_column(column, justify="left" if column == "patterns" else "right")
    names = {
        "bare": "none",
        "retries": "retries",
        "degradation": "degradation",
        "both": "retries + degradation (as configured)",
    }
    for e in analysis.estimates:
        r = e.reliability
        table.add_row(
            names[e.label],
            f"{r.success:.2%}",
            f"{r.complete:.2%}",
            f"{r.degraded:.2%}",
            f"{r.failed:.2%}",
        )
    console.print(table)
    raise typer.Exit(ExitCode.OK)


def register(app: typer.Typer) -> None:
    """Add ``check`` and ``analyze`` to the ``firebreak`` app."""
    app.command("check")(check_command)
    app.command("analyze")(analyze_command)
