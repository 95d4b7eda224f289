"""One ``LISTEN`` connection per store, fanning notifications out to waiting tasks.

Triggers send ``NOTIFY firebreak_<schema>, '<run_id>/<agent>'`` when a step is committed or
changed and ``'<run_id>/'`` when a run is created or its status changes; PostgreSQL
delivers them at commit. The listener connects on first use and reconnects with backoff if
the server goes away; after every (re)connection it tells each watcher to re-read, since
notifications sent while it was away are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from psycopg import sql

__all__ = ["RESYNC", "Listener"]

RESYNC = None
"""What a watcher's queue receives when it must re-read (the listener (re)connected)."""

Event = str | None


class Listener:
    """Holds the ``LISTEN`` connection and the watchers of each run."""

    def __init__(
        self,
        conninfo: str,
        channel: str,
        translate: Callable[[BaseException], BaseException],
    ) -> None:
        self._conninfo = conninfo
        self._channel = channel
        self._translate = translate
        self._watchers: dict[str, set[asyncio.Queue[Event]]] = {}
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._error: BaseException | None = None

    @contextlib.asynccontextmanager
    async def watch(
        self, run_id: str, *, connect_within: float
    ) -> AsyncIterator[asyncio.Queue[Event]]:
        """Register a queue for `run_id`'s events; on entry the ``LISTEN`` is active.

        Raises:
            StoreError: the listener could not connect within `connect_within` seconds.
        """
        queue: asyncio.Queue[Event] = asyncio.Queue()
        self._watchers.setdefault(run_id, set()).add(queue)
        try:
            if self._task is None:
                self._task = asyncio.create_task(self._run(), name="firebreak-pg-listen")
            try:
                await asyncio.wait_for(self._ready.wait(), connect_within)
            except TimeoutError as exc:
                cause = self._error or exc
                raise self._translate(cause) from cause
            yield queue
        finally:
            queues = self._watchers.get(run_id)
            if queues is not None:
                queues.discard(queue)
                if not queues:
                    del self._watchers[run_id]

    async def close(self) -> None:
        """Stop listening and close the connection."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _broadcast(self, run_id: str | None, event: Event) -> None:
        targets = (
            self._watchers.get(run_id, set()) if run_id is not None else _every(self._watchers)
        )
        for queue in targets:
            queue.put_nowait(event)

    async def _run(self) -> None:
        delay = 0.05
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            except psycopg.Error as exc:
                self._error = exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            try:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self._error, delay = None, 0.05
                self._ready.set()
                self._broadcast(None, RESYNC)
                async for note in conn.notifies():
                    run_id, _, agent = note.payload.rpartition("/")
                    self._broadcast(run_id, agent)
            except psycopg.Error as exc:
                self._error = exc
                self._ready.clear()
            finally:
                await conn.close()


def _every(watchers: dict[str, set[asyncio.Queue[Any]]]) -> list[asyncio.Queue[Any]]:
    return [queue for queues in watchers.values() for queue in queues]
