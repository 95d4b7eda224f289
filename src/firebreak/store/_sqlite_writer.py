"""The single SQLite writer: one thread, one connection, group commit.

Callers on the event loop enqueue a write (a function of the connection); the writer thread
takes everything queued, applies it in ONE transaction with a savepoint per request (so one
request's refusal does not undo the others), commits (one fsync for the whole batch) and
only then resolves each request's future. An acknowledged write is therefore on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from firebreak.errors import StoreCorrupt, StoreError

__all__ = ["Writer", "as_store_error"]

T = TypeVar("T")

MAX_BATCH = 1024
"""Most requests in one transaction: bounds the latency a large backlog adds to each."""


@dataclass(slots=True)
class _Request(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    result: Any = None
    error: BaseException | None = field(default=None)


_STOP = object()


def _settle(batch: list[_Request[Any]]) -> None:
    # Runs on the loop thread: one wake-up per batch, not per request.
    for req in batch:
        if req.future.cancelled():
            continue
        if req.error is not None:
            req.future.set_exception(req.error)
        else:
            req.future.set_result(req.result)


_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def as_store_error(exc: BaseException) -> BaseException:
    """Translate a sqlite3 error into the firebreak tree; pass anything else through."""
    if not isinstance(exc, sqlite3.Error):
        return exc
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF  # primary code of an extended one
    kind = StoreCorrupt if code in _CORRUPT_CODES else StoreError
    err = kind(f"sqlite: {exc}")
    err.__cause__ = exc
    return err


class Writer:
    """Owns the write connection and the thread that alone uses it."""

    def __init__(self, conn: sqlite3.Connection, name: str) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[_Request[Any] | object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    def submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Queue `fn` to run inside the next batch transaction; await the returned future."""
        if self._closed:
            raise StoreError("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._queue.put(_Request(fn, loop, future))
        return future

    async def close(self) -> None:
        """Apply everything already queued, then stop the thread and close the connection."""
        if self._closed:
            return
        self._closed = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)

    def _run(self) -> None:
        stop = False
        try:
            while not stop:
                batch: list[_Request[Any]] = []
                item = self._queue.get()
                while True:
                    if item is _STOP:
                        stop = True
                        break
                    assert isinstance(item, _Request)  # noqa: S101  -- queue holds only these
                    batch.append(item)
                    if len(batch) >= MAX_BATCH:
                        break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    self._apply(batch)
        finally:
            self._conn.close()

    def _apply(self, batch: list[_Request[Any]]) -> None:
        conn = self._conn
        single = len(batch) == 1  # a lone request needs no savepoint: its transaction is its own
        try:
            conn.execute("BEGIN IMMEDIATE")
            for req in batch:
                if not single:
                    conn.execute("SAVEPOINT req")
                try:
                    req.result = req.fn(conn)
                except Exception as exc:  # noqa: BLE001  -- handed to the caller, not swallowed
                    req.error = as_store_error(exc)
                    conn.execute("ROLLBACK" if single else "ROLLBACK TO req")
                    if single:
                        break
                if not single:
                    conn.execute("RELEASE req")
            if conn.in_transaction:
                conn.execute("COMMIT")
        except Exception as exc:  # noqa: BLE001  -- the whole batch failed; every caller hears it
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            err = as_store_error(exc)
            for req in batch:
                req.error, req.result = err, None
        self._resolve(batch)

    @staticmethod
    def _resolve(batch: list[_Request[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request[Any]]] = {}
        for req in batch:
            by_loop.setdefault(req.loop, []).append(req)
        for loop, reqs in by_loop.items():
            # RuntimeError: the caller's loop is closed; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, reqs)
