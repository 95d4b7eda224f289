"""`capture_events`: collect the events firebreak emits inside a block."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from firebreak.events import Event, hub

__all__ = ["capture_events"]


@contextmanager
def capture_events() -> Iterator[list[Event]]:
    """Collect every event emitted inside the block into a list.

    >>> from firebreak import events
    >>> with capture_events() as seen:
    ...     events.emit(events.BudgetExhausted(source="ocr"))
    >>> [type(e).__name__ for e in seen]
    ['BudgetExhausted']
    """
    seen: list[Event] = []
    stop = hub.subscribe(seen.append)
    try:
        yield seen
    finally:
        stop()
