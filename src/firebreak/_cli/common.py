"""What every command shares: the two consoles, the common options, printing a run's end."""

from __future__ import annotations

import inspect
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from firebreak.engine import RunResult
from firebreak.store import SQLiteStore, open_store

from .exits import CliError, ExitCode, exit_code
from .render import print_result, result_json, write_json

__all__ = [
    "SIGPIPE_EXIT",
    "InputFile",
    "Json",
    "Store",
    "WorkflowOpt",
    "WorkflowRef",
    "console",
    "err_console",
    "finish",
    "reflow_help",
    "require_store",
]

SIGPIPE_EXIT = 141
"""The exit code when stdout's reader went away: 128 + SIGPIPE, as a shell reports a
process that signal ended (1, what Rich and Click use, means "the run failed" here)."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """As Rich does (quiet, stdout to /dev/null), but exit 141, not 1."""
        self.quiet = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(SIGPIPE_EXIT)


# No emoji codes: `:fire:` in a run id or an agent's error is text, printed as stored.
console = _Console(emoji=False)
"""Standard output: results and tables."""
err_console = _Console(stderr=True, emoji=False)
"""Standard error: progress and errors, so stdout stays clean for ``--json``."""

Store = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Checkpoint store URL (default: $FIREBREAK_STORE, "
        "else sqlite:///./.firebreak/firebreak.db).",
        show_default=False,
    ),
]
Json = Annotated[bool, typer.Option("--json", help="Print JSON on stdout and nothing else.")]
WorkflowRef = Annotated[
    str,
    typer.Argument(metavar="MODULE:WORKFLOW", help="The workflow, e.g. myapp.flows:invoice."),
]
WorkflowOpt = Annotated[
    str | None,
    typer.Option(
        "--workflow",
        "-w",
        metavar="MODULE:WORKFLOW",
        help="The workflow's code, e.g. myapp.flows:invoice.",
    ),
]
InputFile = Annotated[
    Path | None,
    typer.Option(
        "--input",
        "-i",
        metavar="FILE.json",
        help="The run input as a JSON file ('-': standard input).",
        show_default=False,
    ),
]


def require_store(url: str | None) -> None:
    """Refuse a SQLite store whose file does not exist.

    For commands that only read or continue what is there: opening it would create an
    empty store at a mistyped path (and a cron ``resume --due`` would find nothing to
    resume there, every time).

    Raises:
        CliError: exit 6, naming the path.
    """
    try:
        store = open_store(url)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    if isinstance(store, SQLiteStore) and not store.path.exists():
        raise CliError(
            f"no store at {store.path}: nothing has run with it yet "
            "(--store URL or $FIREBREAK_STORE names another)",
            code=ExitCode.STORE,
        )


def finish(
    result: RunResult, *, as_json: bool, refs: Sequence[str] = (), store: str | None = None
) -> None:
    """Print a run's outcome and exit with the code of its status.

    `refs`, `store`: the command's ``MODULE:WORKFLOW`` references and ``--store``, for the
    next commands it names.
    """
    if as_json:
        write_json(result_json(result))
    else:
        print_result(console, result, refs, store)
    raise typer.Exit(exit_code(result.status))


_LINE_BREAK = re.compile(r"\n(?![ \t]|[-*] )")  # not before an indented or a list line


def reflow_help(app: typer.Typer) -> None:
    """Join the lines of each paragraph of every command's help, in `app` and its groups.

    Typer keeps a docstring's single line breaks in its help, so a paragraph wrapped at the
    source's 100 columns came out as ragged lines in an 80-column terminal. Indented and
    list lines keep theirs.
    """
    for info in app.registered_commands:
        doc = info.help or inspect.getdoc(info.callback)
        if doc:
            info.help = _LINE_BREAK.sub(" ", doc.replace("\n\n", "\0")).replace("\0", "\n\n")
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_help(group.typer_instance)
