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
    """

    def __init__(self, console: Console, label: str, *, total: int | None = None) -> None:
        self.console = console
        self.label = label
        self.total = total
        self.settled: dict[str, set[str]] = {}
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
            self.console.print(
                f"  {escape(event.agent)} {status_text(event.status).markup}{attempts}{reason}",
                highlight=False,
            )
            count = f"{len(done)}/{self.total}" if self.total else str(len(done))
            self._update(f"run {event.run_id} ({event.source}): {count} steps settled")
        elif isinstance(event, events.RunStateChanged):
            verb = "resumed" if event.resumed else event.status
            self._update(f"run {event.run_id} ({event.source}): {verb}")

    def _update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(escape(text))
