"""Live progress on stderr while runs are driven, fed by `firebreak.events`."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from rich.console import Console
from rich.markup import escape
from rich.status import Status

from firebreak import events

from .render import status_text

__all__ = ["RunProgress"]


class RunProgress:
    """A spinner with a line per settled step, on a terminal only; silent otherwise.

    Subscribes to `StepStateChanged` and `RunStateChanged` for the duration of the
    ``with`` block, so what it shows is exactly what the engine reports.

    Args:
        console: where to draw (the stderr console: stdout stays clean for ``--json``).
        label: what the spinner says before any event arrives.
        total: the number of agents, when a single workflow runs (for ``3/5 steps``).
        many: several runs at once (``resume --due``): each step line names its run, and
            the spinner counts the runs that ended.
    """

    def __init__(
        self, console: Console, label: str, *, total: int | None = None, many: bool = False
    ) -> None:
        self.console = console
        self.label = label
        self.total = total
        self.many = many
        self.settled: dict[str, set[str]] = {}
        self.started: set[str] = set()  # run ids seen (many)
        self.ended: dict[str, str] = {}  # run id -> its status, once not running (many)
        self._status: Status | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def __enter__(self) -> Self:
        if self.console.is_terminal:
            self._status = self.console.status(escape(self.label))
            self._status.start()
            self._unsubscribe = events.subscribe(self.on_event)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._status is not None:
            self._status.stop()
            self._status = None

    def on_event(self, event: events.Event) -> None:
        """Show one engine event: a step line, and the spinner's new text."""
        if isinstance(event, events.StepStateChanged):
            done = self.settled.setdefault(event.run_id, set())
            done.add(event.agent)
            attempts = f" after {event.attempts} attempts" if event.attempts > 1 else ""
            reason = f" [dim]({escape(event.reason)})[/]" if event.reason else ""
            step = f"{event.run_id} {event.agent}" if self.many else event.agent
            self.console.print(
                f"  {escape(step)} {status_text(event.status).markup}{attempts}{reason}",
                highlight=False,
            )
            if not self.many:
                count = f"{len(done)}/{self.total}" if self.total else str(len(done))
                self._update(f"run {event.run_id} ({event.source}): {count} steps settled")
        elif isinstance(event, events.RunStateChanged):
            if self.many:
                self.started.add(event.run_id)
                if event.status != "running":
                    self.ended[event.run_id] = event.status
                self._update(f"{len(self.ended)} of {len(self.started)} runs ended")
            else:
                verb = "resumed" if event.resumed else event.status
                self._update(f"run {event.run_id} ({event.source}): {verb}")

    def _update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(escape(text))
