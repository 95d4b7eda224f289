"""Progress on stderr: drawn from engine events on a terminal, silent otherwise."""

from __future__ import annotations

import io

from rich.console import Console

from firebreak import events
from firebreak._cli.progress import RunProgress


def _console(*, terminal: bool) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=terminal, width=120, color_system=None), buffer


def test_on_a_terminal_each_settled_step_gets_a_line() -> None:
    console, buffer = _console(terminal=True)
    with RunProgress(console, "run r1", total=2) as progress:
        events.emit(events.RunStateChanged(source="wf", run_id="r1", status="running"))
        events.emit(
            events.StepStateChanged(
                source="wf", run_id="r1", agent="extract", status="succeeded", attempts=1
            )
        )
        events.emit(
            events.StepStateChanged(
                source="wf",
                run_id="r1",
                agent="enrich",
                status="degraded",
                attempts=3,
                reason="TimeoutError: slow",
            )
        )
        assert progress.settled == {"r1": {"extract", "enrich"}}
    text = buffer.getvalue()
    assert "extract succeeded" in text
    assert "enrich degraded after 3 attempts (TimeoutError: slow)" in text


def test_many_runs_at_once_name_the_run_of_each_step_and_count_the_ended() -> None:
    """`resume --due` drives many runs: a bare "extract succeeded" would not say whose."""
    console, buffer = _console(terminal=True)
    with RunProgress(console, "resuming due runs", many=True) as progress:
        for run_id in ("r1", "r2"):
            events.emit(events.RunStateChanged(source="wf", run_id=run_id, status="running"))
        events.emit(
            events.StepStateChanged(source="wf", run_id="r2", agent="extract", status="succeeded")
        )
        events.emit(events.RunStateChanged(source="wf", run_id="r2", status="succeeded"))
        assert (progress.started, progress.ended) == ({"r1", "r2"}, {"r2": "succeeded"})
    assert "r2 extract succeeded" in buffer.getvalue()


def test_off_a_terminal_it_does_not_subscribe_or_print() -> None:
    console, buffer = _console(terminal=False)
    with RunProgress(console, "run r1") as progress:
        events.emit(events.StepStateChanged(source="wf", run_id="r1", agent="a", status="failed"))
    assert progress.settled == {}
    assert buffer.getvalue() == ""


def test_it_unsubscribes_when_the_block_ends() -> None:
    console, _ = _console(terminal=True)
    with RunProgress(console, "run r1") as progress:
        pass
    events.emit(events.StepStateChanged(source="wf", run_id="r1", agent="a", status="failed"))
    assert progress.settled == {}
