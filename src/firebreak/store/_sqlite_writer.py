"""The single SQLite writer: one connection, group commit, and no thread hop when idle.

Callers on the event loop await `Writer.write` of a function of the connection. When the
loop has nothing else ready to run, no other write is queued or in flight and no WAL
checkpoint is due, the write is applied right there, on the loop thread, and its result
returned without a future: a lone commit then costs its fsync and nothing more, where
a hand-over to the writer thread and back costs two thread wake-ups (65 us measured, more on
a busy host). Otherwise it is queued for the writer thread, which takes everything queued,
applies it in ONE transaction with a savepoint per request (so one request's refusal does
not undo the others), commits (one fsync for the whole batch) and only then resolves each
request's future. Either way an acknowledged write is on disk.

Why "nothing else ready" is the test: the loop is blocked during an inline commit, so it is
taken only when the loop had nothing to do meanwhile. Under load other runs are ready, their
writes go to the thread, and they share fsyncs as before. An inline write never waits for
another process's lock (busy timeout 0): if the file is locked it goes to the thread, which
waits `busy_timeout` as usual. WAL checkpoints run on the thread, never inline. A write of
one statement (``single``: a step commit) runs inline as a transaction by itself, with no
BEGIN and COMMIT statements around it.

A write with ``sync=False`` commits without its own fsync when nothing synced shares its
transaction. The WAL is one file synced in order, so such a write becomes durable with the
next synced commit; `SQLiteStore.begin_run` uses it (see there why that is safe).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from firebreak.errors import StoreCorrupt, StoreError

__all__ = ["Writer", "as_store_error"]

T = TypeVar("T")

MAX_BATCH = 1024
"""Most requests in one transaction: bounds the latency a large backlog adds to each."""

_BUSY_PAUSES = (0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.025, 0.025, 0.025, 0.05, 0.05, 0.1)
"""Seconds between tries while another process holds the write lock (SQLite's own steps)."""

CHECKPOINT_EVERY = 600
"""Requests between WAL checkpoints (about 900 WAL pages of step commits; SQLite's own
default is 1,000 pages): the connection's auto-checkpoint is off so that none runs inline."""


@dataclass(slots=True)
class _Request(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    sync: bool = True
    result: Any = None
    error: BaseException | None = field(default=None)


_STOP = object()
_MISSED = object()  # not applied inline: the write goes to the thread
_CHECKPOINT = object()


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
    if code == sqlite3.SQLITE_CORRUPT:
        # SQLite says so too when the disk under it fails: nobody should delete a file
        # that is whole once the disk is back.
        err: StoreError = StoreCorrupt(
            f"sqlite: {exc} (or the disk failed under it: check the system log, then "
            "`PRAGMA integrity_check` on a copy, before deleting anything)"
        )
    elif code == sqlite3.SQLITE_BUSY:
        err = StoreError(
            f"sqlite: {exc}: another process held the write lock past the store's busy "
            "timeout (SQLiteStore(busy_timeout=...), 5 s by default)"
        )
    else:
        err = (StoreCorrupt if code in _CORRUPT_CODES else StoreError)(f"sqlite: {exc}")
    err.__cause__ = exc
    return err


class FileWatch:
    """Whether the database file and its WAL are still those the connection writes to.

    Deleted, or replaced by another file (``mv``), under a live connection, SQLite goes on
    writing to the unlinked inode: commits reported durable vanish with the process, and
    a WAL left behind is applied to the new file, which it corrupts. Checked before a
    transaction at most every `EVERY` seconds: each path still names the inode it named at
    the start (``os.stat``). Everything committed before the deletion is gone with the file
    anyway, so what matters is to stop loudly and soon: checked before every transaction,
    two ``fstat`` cost 8 % of a durable step on a slow host.

    By path, not through descriptors of our own: closing any descriptor of a file drops
    every POSIX lock this process holds on it, SQLite's included, so closing the watch of
    one store let another process delete the WAL another store of this process still
    wrote to (commits acknowledged, then lost with a ``kill -9``).
    """

    EVERY = 0.1

    __slots__ = ("_due", "_inodes", "path")

    def __init__(self, path: str) -> None:
        # Absolute, as SQLite opened it: a relative path would name another file after an
        # os.chdir of the process.
        path = os.path.abspath(path)  # noqa: PTH100 - a str path, kept as one
        self.path = path
        self._due = 0.0
        self._inodes: dict[str, tuple[int, int]] = {}
        for name in (path, path + "-wal"):  # the WAL exists while a connection is open
            with contextlib.suppress(OSError):
                found = os.stat(name)  # noqa: PTH116 - a str path, on every check
                self._inodes[name] = (found.st_dev, found.st_ino)

    def check(self) -> None:
        """Raises `StoreError` if either file has gone from its path (checked if due)."""
        now = time.monotonic()
        if now < self._due:
            return
        for name, inode in self._inodes.items():
            try:
                found = os.stat(name)  # noqa: PTH116 - a str path, on every check
            except FileNotFoundError:
                found = None
            if found is None or (found.st_dev, found.st_ino) != inode:
                raise StoreError(
                    f"{name} was deleted or replaced while this store had it open: "
                    "nothing more is written (it would be lost); restore the file, or "
                    "point the store at a new one, and restart this process"
                )
        self._due = now + self.EVERY


def _busy(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database is locked" (the primary code of an extended one)."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return isinstance(exc, sqlite3.OperationalError) and code == sqlite3.SQLITE_BUSY


def _idle(loop: asyncio.AbstractEventLoop) -> bool:
    # asyncio's run queue is private; a loop without one (uvloop) always uses the thread.
    ready = getattr(loop, "_ready", None)
    return ready is not None and not ready


class Writer:
    """Owns the write connection: the loop thread uses it when idle, the writer thread else."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        name: str,
        *,
        busy_timeout: float,
        full: bool,
        watch: FileWatch | None = None,
    ) -> None:
        self._conn = conn
        self._watch = watch
        self._busy_timeout = busy_timeout
        # SQLite's own busy wait would block the loop on an inline write: it is off, and
        # the thread waits itself (`_begin`).
        conn.execute("PRAGMA busy_timeout = 0")
        self._full = full  # the store's setting: synchronous=FULL
        self._syncing = full  # the connection's setting now (under _using)
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        self._queue: queue.SimpleQueue[_Request[Any] | object] = queue.SimpleQueue()
        self._using = threading.Lock()  # held by whichever thread is using the connection
        self._counting = threading.Lock()
        self._queued = 0  # requests ever queued (under _counting)
        self._applied = 0  # requests the thread finished (under _using)
        self._since_checkpoint = 0  # under _using
        self._checkpoint_due = False  # an inline write queued one (under _using)
        self.transactions = 0
        """Transactions committed or rolled back so far (group commit makes it < requests)."""
        self.synced = 0
        """Of those, how many were synced (FULL: one fsync each); the rest ride on the next."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], *, sync: bool = True, single: bool = False
    ) -> T:
        """Apply `fn` in a transaction and return its result: inline if idle, else batched.

        ``sync=False``: no fsync of its own unless batched with a synced write.
        ``single=True``: `fn` writes with one statement (reads after a failed one are
        fine); inline it runs as its own transaction, with no BEGIN and COMMIT around it.
        The inline path is written out here, not in helpers: this runs for every step.
        """
        if self._closed:
            raise StoreError("the store is closed")
        if _idle(asyncio.get_running_loop()) and self._using.acquire(blocking=False):
            try:
                # Equal counts: nothing queued ahead of this write, so order is kept. A due
                # checkpoint goes first: inline writes could otherwise keep the thread from
                # the connection while the WAL grows.
                if self._queued == self._applied and not self._checkpoint_due:
                    if (self._full and sync) != self._syncing:
                        self._set_sync(sync)
                    result = self._apply_inline(fn, single)
                    if result is not _MISSED:
                        self.synced += self._syncing
                        if self._count(1):
                            self._checkpoint_due = True
                            self._queue.put(_CHECKPOINT)  # on the thread, not inline
                        return cast("T", result)
            finally:
                self._using.release()
        return await self._enqueue(fn, sync)

    def _apply_inline(self, fn: Callable[[sqlite3.Connection], T], single: bool) -> T | object:  # noqa: FBT001
        """`fn` in a transaction of its own (a single statement is one by itself).

        `_MISSED`, with nothing written, while another process holds the write lock.
        """
        conn = self._conn
        if self._watch is not None:
            self._watch.check()
        if not single:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError:
                return _MISSED  # another process writes: wait for it on the thread, not here
        try:
            result = fn(conn)
            if not single:
                conn.execute("COMMIT")
        except BaseException as exc:
            # Also KeyboardInterrupt on the loop thread: leave no open transaction.
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            elif single and _busy(exc):
                return _MISSED  # the statement was refused whole: the thread waits for it
            self.transactions += 1
            err = as_store_error(exc)
            if err is exc:
                raise
            raise err from exc
        self.transactions += 1
        return result

    def _enqueue(self, fn: Callable[[sqlite3.Connection], T], sync: bool) -> asyncio.Future[T]:  # noqa: FBT001
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._counting:
            self._queued += 1
        self._queue.put(_Request(fn, loop, future, sync))
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
                    if item is _CHECKPOINT:
                        with self._using:
                            self._checkpoint()
                            self._checkpoint_due = False
                    else:
                        assert isinstance(item, _Request)  # noqa: S101  -- only these queued
                        batch.append(item)
                        if len(batch) >= MAX_BATCH:
                            break
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    with self._using:
                        self._transact(batch)
                        self._applied += len(batch)
                        due = self._count(len(batch))
                    self._resolve(batch)
                    if due:
                        with self._using:
                            self._checkpoint()
        finally:
            self._conn.close()

    def _count(self, applied: int) -> bool:
        """Count writes applied (holding `_using`); whether a checkpoint is due now."""
        self._since_checkpoint += applied
        if self._since_checkpoint < CHECKPOINT_EVERY:
            return False
        self._since_checkpoint = 0
        return True

    def _checkpoint(self) -> None:
        # Called holding `_using`, so no commit lands meanwhile. Tried on a connection of
        # its own beside the writer: commits made during the checkpoint kept it from
        # completing, the WAL never restarted and grew (17 MB after 4,800 writes), and an
        # fsync of a growing file cost 227-249 µs a commit against 115-117 µs.
        # PASSIVE: copies what no reader still needs and never waits; a failure here is
        # retried at the next one and loses nothing (the WAL keeps every frame).
        with contextlib.suppress(sqlite3.Error):
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _begin(self) -> None:
        """BEGIN IMMEDIATE, waiting up to the busy timeout while another process writes."""
        deadline: float | None = None
        pauses = iter(_BUSY_PAUSES)
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                now = time.monotonic()
                deadline = now + self._busy_timeout if deadline is None else deadline
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY or now >= deadline:
                    raise
                time.sleep(min(next(pauses, _BUSY_PAUSES[-1]), deadline - now))
            else:
                return

    def _set_sync(self, sync: bool) -> None:  # noqa: FBT001  -- the batch's need, computed
        # SQLite refuses to change this inside a transaction: set before BEGIN.
        want = self._full and sync
        if want != self._syncing:
            self._conn.execute(f"PRAGMA synchronous = {'FULL' if want else 'NORMAL'}")
            self._syncing = want

    def _transact(self, batch: list[_Request[Any]]) -> None:
        """Apply `batch` in one transaction, a savepoint per request, and commit it.

        SQLite rolls a whole transaction back by itself on some errors (SQLITE_FULL: a
        full disk; SQLITE_IOERR): the requests applied before the one that failed are
        undone with it. They are applied again, in a new transaction, without it (every
        write is safe to repeat); each pass drops at least one request.
        """
        pending = batch
        while pending:
            undone = self._transact_once(pending)
            pending = [req for req in pending if req.error is None] if undone else []

    def _transact_once(self, batch: list[_Request[Any]]) -> bool:
        """One transaction of `batch`; whether SQLite rolled it back (then none committed)."""
        conn = self._conn
        single = len(batch) == 1  # a lone request needs no savepoint: its transaction is its own
        self.transactions += 1
        try:
            if self._watch is not None:
                self._watch.check()
            self._set_sync(any(req.sync for req in batch))
            self._begin()
            for req in batch:
                if not single:
                    conn.execute("SAVEPOINT req")
                try:
                    req.result = req.fn(conn)
                except Exception as exc:  # noqa: BLE001  -- handed to the caller, not swallowed
                    req.error = as_store_error(exc)
                    if not conn.in_transaction:
                        return not single  # SQLite undid the others too: apply them again
                    conn.execute("ROLLBACK" if single else "ROLLBACK TO req")
                    if single:
                        break
                if not single:
                    conn.execute("RELEASE req")
            if conn.in_transaction:
                conn.execute("COMMIT")
                self.synced += self._syncing
        except Exception as exc:  # noqa: BLE001  -- the whole batch failed; every caller hears it
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            err = as_store_error(exc)
            for req in batch:
                req.error, req.result = err, None
        return False

    @staticmethod
    def _resolve(batch: list[_Request[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request[Any]]] = {}
        for req in batch:
            by_loop.setdefault(req.loop, []).append(req)
        for loop, reqs in by_loop.items():
            # RuntimeError: the caller's loop is closed; nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, reqs)
