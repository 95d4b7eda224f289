"""Exit codes of the command line and the one-line error every expected failure becomes.

The codes are part of the CLI's contract (scripts branch on them); never renumber them.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Coroutine, Iterable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from firebreak._cli.render import when
from firebreak.errors import BusError, FirebreakError, LeaseHeld, StoreCorrupt, StoreError
from firebreak.store import RunStatus

__all__ = [
    "EXIT_CODES_HELP",
    "CliError",
    "ExitCode",
    "cli_errors",
    "exit_code",
    "run_async",
    "worst_exit_code",
]

T = TypeVar("T")


class ExitCode(IntEnum):
    """What the process exit status means."""

    OK = 0
    """Succeeded (or, for commands that only read or record, did what was asked)."""
    FAILED = 1
    """The run failed (it is in the dead-letter queue)."""
    USAGE = 2
    """Usage or configuration error: bad option, file, MODULE:WORKFLOW, id or store URL."""
    DEGRADED = 3
    """The run finished, but some optional agents degraded to their defaults."""
    PAUSED = 4
    """The run is paused until a service recovers (``firebreak resume --due`` later)."""
    NEEDS_REVIEW = 5
    """The run waits for a person (``firebreak review list``)."""
    STORE = 6
    """The checkpoint store failed or refused (corrupt file, run leased by another process)."""
    INTERRUPTED = 130
    """Stopped by Ctrl-C (SIGINT); runs in progress keep their committed steps."""
    TERMINATED = 143
    """Stopped by SIGTERM (a container stopping); runs in progress keep their steps."""


EXIT_CODES_HELP = (
    "Exit codes: 0 succeeded · 1 failed · 2 usage or configuration error · "
    "3 degraded · 4 paused · 5 needs review · "
    "6 store or bus error (corrupt, lease held, unreachable) · "
    "130/143 stopped by Ctrl-C/SIGTERM. "
    "With several runs (resume --due) the worst wins: 1 > 5 > 4 > 3 > 0."
)
"""The exit codes in one paragraph, for ``firebreak --help``."""

_BY_STATUS = {
    RunStatus.SUCCEEDED: ExitCode.OK,
    RunStatus.FAILED: ExitCode.FAILED,
    RunStatus.DEGRADED: ExitCode.DEGRADED,
    RunStatus.PAUSED: ExitCode.PAUSED,
    RunStatus.NEEDS_REVIEW: ExitCode.NEEDS_REVIEW,
}
# Worst first: a failure needs action now, a review needs a person, a pause resolves itself.
_SEVERITY = (
    ExitCode.FAILED,
    ExitCode.NEEDS_REVIEW,
    ExitCode.PAUSED,
    ExitCode.DEGRADED,
    ExitCode.OK,
)


def exit_code(status: RunStatus | str) -> ExitCode:
    """The exit code for a run that ended in `status` (pending or running: 0)."""
    return _BY_STATUS.get(RunStatus(status), ExitCode.OK)


def worst_exit_code(statuses: Iterable[RunStatus | str]) -> ExitCode:
    """The most severe exit code among runs (0 for none): failed > review > paused > degraded."""
    codes = {exit_code(status) for status in statuses}
    return next((code for code in _SEVERITY if code in codes), ExitCode.OK)


class CliError(Exception):
    """An expected failure: printed as one line on stderr, then the process exits with `code`."""

    def __init__(self, message: str, *, code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


@contextmanager
def cli_errors(console: Console) -> Iterator[None]:
    """Turn a `CliError` raised in the block into one line on `console` and an exit code."""
    try:
        yield
    except CliError as exc:
        console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        raise typer.Exit(exc.code) from None


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0] if lines else ""


RESUME_DUE = "firebreak resume --due -w MODULE:WORKFLOW"


def run_async(coro: Coroutine[Any, Any, T], *, resume: str = RESUME_DUE) -> T:
    """Run `coro` to its end; the errors the public API documents become a `CliError`.

    Store errors exit with 6; unknown ids (`KeyError`), bad values (`ValueError`) and
    other firebreak errors with 2. Anything else is a bug and keeps its traceback.
    Ctrl-C and SIGTERM cancel `coro` as each other do, so a run in progress gives its
    lease up (another process may resume it at once, not a lease's time later), and
    exit 130 and 143 with a line saying how to continue (`resume`: the command).
    """
    signals: list[str] = []

    async def main() -> T:
        task = asyncio.current_task()
        assert task is not None  # noqa: S101 - asyncio.run runs this as a task

        def terminate() -> None:
            signals.append("SIGTERM")
            task.cancel()

        # Not where signals cannot be handled (Windows, a thread); asyncio.run does SIGINT.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, terminate)
        return await coro

    stopped = f"the runs in progress keep every committed step; continue with: {resume}"
    try:
        return asyncio.run(main())
    except KeyboardInterrupt:
        raise CliError(f"interrupted: {stopped}", code=ExitCode.INTERRUPTED) from None
    except asyncio.CancelledError:
        if not signals:
            raise
        raise CliError(f"terminated: {stopped}", code=ExitCode.TERMINATED) from None
    except BusError as exc:
        raise CliError(_first_line(str(exc)), code=ExitCode.STORE) from exc
    except StoreError as exc:
        message = _first_line(str(exc)) or type(exc).__name__
        if isinstance(exc, LeaseHeld):
            until = when(exc.expires_at, time.time())
            message += (
                f" until {until}: another process is driving it (or one that died on another"
                " machine, or under an owner id of its own, holds it until then)"
            )
        what = "store corrupt" if isinstance(exc, StoreCorrupt) else "store"
        raise CliError(f"{what}: {message}", code=ExitCode.STORE) from exc
    except FirebreakError as exc:  # their messages say what went wrong without the class
        raise CliError(_first_line(str(exc)) or type(exc).__name__) from exc
    except KeyError as exc:
        raise CliError(str(exc.args[0]) if exc.args else "not found") from exc
    except ValueError as exc:
        raise CliError(_first_line(str(exc))) from exc
