"""The ``firebreak`` command line: a thin shell over the public API."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from firebreak._version import __version__

app = typer.Typer(
    name="firebreak",
    help="Keep multi-agent workflows alive when their parts fail.",
    no_args_is_help=True,
    add_completion=False,
)
demo_app = typer.Typer(help="Runnable demonstrations on simulated services.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")

console = Console()


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


def main() -> None:
    """Entry point of the ``firebreak`` script."""
    app()
