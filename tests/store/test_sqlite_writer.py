"""The SQLite writer: a lone write on an idle loop commits inline; anything else is batched.

Inline means no hand-over to the writer thread and back (two thread wake-ups); the tests pin
down when that is allowed, because a wrong guess would either stall the event loop (another
process holds the file) or lose group commit (many runs writing at once).
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from functools import partial
from pathlib import Path

import pytest
from store_helpers import leased, step

from firebreak.errors import StoreError
from firebreak.store import Lease, SQLiteStore
from firebreak.store import _sqlite_ops as ops
from firebreak.store import _sqlite_writer as writer_module
from firebreak.store._sqlite_writer import FileWatch, Writer


def _insert(lease: Lease, agent: str) -> ops.StepInsert:
    return ops.step_insert(lease, step("r1", agent, None), 1.0)


def _writer(store: SQLiteStore) -> Writer:
    assert store._writer is not None
    return store._writer


async def test_a_lone_write_on_an_idle_loop_never_yields_to_the_loop(tmp_path: Path) -> None:
    async with SQLiteStore(tmp_path / "fb.db") as store:
        await leased(store)
        write = _writer(store).write(lambda conn: conn.execute("SELECT 1").fetchone()[0])
        with pytest.raises(StopIteration) as done:
            write.send(None)  # a write that went to the thread would suspend here instead
        assert done.value.value == 1


async def test_writes_of_many_runs_at_once_share_transactions(tmp_path: Path) -> None:
    """Group commit survives the inline path: 50 concurrent commits, few transactions."""
    async with SQLiteStore(tmp_path / "fb.db", synchronous="NORMAL") as store:
        leases = [await leased(store, f"r{i}") for i in range(50)]
        before = _writer(store).transactions
        done = await asyncio.gather(
            *(store.commit_step(lease, step(lease.run_id, "a")) for lease in leases)
        )
        assert done == [True] * 50
        assert _writer(store).transactions - before <= 5


@pytest.mark.parametrize("single", [False, True], ids=["transaction", "one-statement"])
async def test_a_file_locked_by_another_process_does_not_stall_the_loop(
    tmp_path: Path, single: bool
) -> None:
    """The write waits for the lock on the writer thread; the loop keeps running meanwhile.

    Also a one-statement write (a step commit), which inline has no BEGIN to be refused:
    its statement is, whole, and it goes to the thread the same way.
    """
    path = tmp_path / "fb.db"
    # The lock is released only after this loop turns: a write that waited for it on the
    # loop would hang past pytest's timeout instead of the 120 s it is allowed on the thread.
    async with SQLiteStore(path, busy_timeout=120) as store:
        lease = await leased(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another writer holds the file's write lock
        released = asyncio.Event()

        def release() -> None:
            other.execute("COMMIT")
            other.close()
            released.set()

        try:
            # From an idle loop, so the inline path is tried first; the lock goes on a
            # later turn of this loop, which a write waiting on it here would never reach.
            asyncio.get_running_loop().call_later(0.05, release)
            commit = partial(ops.commit_step, lease, _insert(lease, "a"))
            assert await _writer(store).write(commit, single=single) is True
            assert released.is_set()
        finally:
            if not released.is_set():
                release()
        assert list(await store.get_steps("r1")) == ["a"]


async def test_inline_commits_still_checkpoint_the_wal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SQLite's own auto-checkpoint is off (it would run inline); the thread does it."""
    every = 100
    monkeypatch.setattr(writer_module, "CHECKPOINT_EVERY", every)
    path = tmp_path / "fb.db"
    async with SQLiteStore(path, synchronous="NORMAL") as store:
        lease = await leased(store)
        for i in range(every):
            await store.commit_step(lease, step("r1", f"a{i}", "x" * 2000))
        size_after_one_round = (tmp_path / "fb.db-wal").stat().st_size
        for i in range(every, 4 * every):
            await store.commit_step(lease, step("r1", f"a{i}", "x" * 2000))
        # Checkpointed WAL frames are reused: the file stops growing after the first round.
        assert (tmp_path / "fb.db-wal").stat().st_size <= 1.5 * size_after_one_round


def _synchronous(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA synchronous").fetchone()[0])  # 1 NORMAL, 2 FULL


async def test_an_unsynced_write_leaves_every_other_write_fsynced(tmp_path: Path) -> None:
    """`sync=False` (a run's begin) skips its own fsync, never a synced write's."""
    async with SQLiteStore(tmp_path / "fb.db") as store:
        writer = _writer(store)
        assert await writer.write(_synchronous, sync=False) == 1
        assert await writer.write(_synchronous) == 2

        # Many runs at once, synced and not, batched by the thread: a synced one is synced.
        async def one(sync: bool) -> int:
            return await writer.write(_synchronous, sync=sync)

        got = await asyncio.gather(*(one(sync=i % 2 == 0) for i in range(20)))
        assert got[0::2] == [2] * 10
    async with SQLiteStore(tmp_path / "fb.db", synchronous="NORMAL") as store:
        assert await _writer(store).write(_synchronous) == 1


async def test_a_lock_held_past_the_busy_timeout_fails_the_write_clearly(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    async with SQLiteStore(path, busy_timeout=0.05) as store:
        lease = await leased(store)
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked: another process held the write lock"):
                await store.commit_step(lease, step("r1", "a"))
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert await store.commit_step(lease, step("r1", "a")) is True  # nothing was half-done


@pytest.mark.parametrize("gone", ["fb.db", "fb.db-wal"])
@pytest.mark.parametrize("how", ["deleted", "replaced", "moved"])
@pytest.mark.parametrize("concurrent", [False, True], ids=["inline", "batched"])
async def test_a_file_deleted_or_replaced_under_the_store_stops_every_write(
    tmp_path: Path, gone: str, how: str, concurrent: bool
) -> None:
    """SQLite wrote on to the unlinked file: 1,520 runs reported finished, none in the
    store afterwards (and a WAL left behind corrupted the file moved in its place)."""
    async with SQLiteStore(tmp_path / "fb.db") as store:
        lease = await leased(store)
        assert await store.commit_step(lease, step("r1", "a"))
        if how == "deleted":
            (tmp_path / gone).unlink()
        elif how == "moved":  # `mv fb.db backup.db`: the store's path names no file
            (tmp_path / gone).rename(tmp_path / "backup")
        else:  # `mv other.db fb.db`
            (tmp_path / "other").write_bytes(b"")
            (tmp_path / "other").replace(tmp_path / gone)
        await asyncio.sleep(FileWatch.EVERY)  # checked that often: a stop soon, not at once
        n = 3 if concurrent else 1
        results = await asyncio.gather(
            *(store.commit_step(lease, step("r1", f"b{i}")) for i in range(n)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreError) for r in results), results
        assert f"{gone} was deleted or replaced while this store had it open" in str(results[0])


async def test_closing_one_store_leaves_another_on_the_same_file_its_locks(tmp_path: Path) -> None:
    """Two stores of one process on one file, one closed: the other's commits stay durable.

    The closed store's watch used to close a descriptor of the file of its own, which drops
    every POSIX lock of the process on it, SQLite's included: another process closing its
    connection then took itself for the last user and deleted the WAL still written to.
    """
    path = tmp_path / "fb.db"
    first, second = SQLiteStore(path), SQLiteStore(path)
    await first.setup()
    await second.setup()
    try:
        lease = await leased(second)
        await first.close()
        read = (
            "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "print(c.execute('SELECT count(*) FROM steps').fetchone()[0]); c.close()"
        )
        other = [sys.executable, "-c", read, str(path)]
        run = partial(subprocess.run, other, check=True, capture_output=True, text=True)
        await asyncio.to_thread(run)
        assert (tmp_path / "fb.db-wal").exists()  # not taken for the last user's, not deleted
        assert await second.commit_step(lease, step("r1", "after"))
        seen = await asyncio.to_thread(run)
        assert seen.stdout.strip() == "1"  # in the file others read, not an unlinked WAL
    finally:
        await second.close()


async def test_a_relative_store_path_is_watched_where_it_was_opened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The process changing directory is not the file being deleted."""
    (tmp_path / "app").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "app")
    async with SQLiteStore("runs.db") as store:
        lease = await leased(store)
        assert await store.commit_step(lease, step("r1", "a"))
        monkeypatch.chdir(tmp_path / "elsewhere")
        await asyncio.sleep(FileWatch.EVERY)  # the watch looks again
        assert await store.commit_step(lease, step("r1", "b"))
