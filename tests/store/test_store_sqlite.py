"""SQLite backend: durability across reopen, refusing foreign or newer files, group commit."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from store_helpers import leased, step

from firebreak.errors import StaleLease, StateConflict, StoreCorrupt, StoreError
from firebreak.store import SQLiteStore, StepStatus
from firebreak.store._sqlite_schema import MIGRATIONS
from firebreak.testing import FakeClock


async def test_reopen_keeps_everything(tmp_path: Path, wall: FakeClock) -> None:
    path = tmp_path / "deep" / "dir" / "fb.db"  # setup creates the directory
    async with SQLiteStore(path, clock=wall.wall) as store:
        lease = await leased(store)
        await store.commit_step(lease, step("r1", "a", {"v": "ü"}))
        await store.set_run_status(lease, "paused", resume_at=wall.wall() + 9)
        await store.cas_state("r1", 0, {"s": 1})
        dlq_id = await store.dlq_put(run_id="r0", workflow="wf", reason="x", input=[1])
        review_id = await store.review_put(run_id="r1", workflow="wf", agent="a", reason="?")
        before = (
            await store.get_run("r1"),
            await store.get_steps("r1"),
            await store.get_state("r1"),
            await store.dlq_get(dlq_id),
            await store.review_get(review_id),
        )
    async with SQLiteStore(path, clock=wall.wall) as store:
        after = (
            await store.get_run("r1"),
            await store.get_steps("r1"),
            await store.get_state("r1"),
            await store.dlq_get(dlq_id),
            await store.review_get(review_id),
        )
        assert after == before
        # The lease survived too: its holder may go on, a newcomer may not.
        assert await store.commit_step(lease, step("r1", "b"))


async def test_setup_is_idempotent_and_close_too(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fb.db")
    await store.setup()
    await store.setup()
    await store.create_run("r1", "wf", None)
    await store.close()
    await store.close()
    with pytest.raises(StoreError, match="not open"):
        await store.get_run("r1")


async def test_use_before_setup_says_so(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "fb.db")
    with pytest.raises(StoreError, match="setup"):
        await store.create_run("r1", "wf", None)
    assert not (tmp_path / "fb.db").exists()  # nothing connects in __init__


async def test_a_path_whose_directory_cannot_be_made_is_a_store_error(tmp_path: Path) -> None:
    """Not an `OSError` traceback: the CLI's exit 6, "store error", with the path."""
    (tmp_path / "afile").write_text("", encoding="utf-8")
    with pytest.raises(StoreError, match=r"afile/x\.db: cannot make its directory"):
        async with SQLiteStore(tmp_path / "afile" / "x.db"):
            pass


async def test_a_file_that_is_not_sqlite_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    path.write_bytes(b"this is not a database, it is a shopping list\n" * 100)
    with pytest.raises(StoreCorrupt, match="not a usable SQLite database"):
        await SQLiteStore(path).setup()


async def test_a_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER)")
    conn.close()
    with pytest.raises(StoreCorrupt, match=r"did not create .*invoices"):
        await SQLiteStore(path).setup()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    conn.close()


async def test_a_file_from_a_newer_firebreak_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    async with SQLiteStore(path) as store:
        await store.create_run("r1", "wf", None)
    newer = len(MIGRATIONS) + 1
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt) as err:
        await SQLiteStore(path).setup()
    assert f"was written by a newer firebreak (schema {newer} > {len(MIGRATIONS)})" in str(
        err.value
    )


async def test_a_file_of_the_first_schema_is_migrated_with_its_runs(tmp_path: Path) -> None:
    """A store written by firebreak 0.1's first schema opens, keeps its data, gets upgraded."""
    path = tmp_path / "fb.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for statement in MIGRATIONS[0]:
        conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.execute(
        "INSERT INTO runs (run_id, workflow, status, input, created_at, updated_at)"
        " VALUES ('old', 'wf', 'succeeded', '{}', 0, 0)"
    )
    conn.execute("INSERT INTO steps VALUES ('old', 'a', 'succeeded', '1', 1, NULL, NULL, 1, 0)")
    conn.close()
    async with SQLiteStore(path) as store:
        assert (await store.get_steps("old"))["a"].output == 1
        lease = await leased(store, "new")
        for agent in ("z", "b", "m"):  # commit order, not name order, is the steps' order
            assert await store.commit_step(lease, step("new", agent))
        assert list(await store.get_steps("new")) == ["z", "b", "m"]
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert "steps_by_seq" not in indexes
    conn.close()


async def test_another_apps_versioned_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    with pytest.raises(StoreCorrupt, match="another application"):
        await SQLiteStore(path).setup()


async def test_file_is_in_wal_mode_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    async with SQLiteStore(path):
        pass
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    conn.close()


def test_options_are_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStore(tmp_path / "x.db", synchronous="OFF")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="MemoryStore"):
        SQLiteStore(":memory:")


async def test_one_refusal_in_a_batch_does_not_undo_the_others(tmp_path: Path) -> None:
    """Group commit: requests queued together share a transaction but not their fate."""
    async with SQLiteStore(tmp_path / "fb.db", synchronous="NORMAL") as store:
        lease = await leased(store)
        await store.cas_state("r1", 0, {})
        stale = lease.__class__(run_id="r1", owner="orch-1", token=lease.token - 1, expires_at=0)
        ops = []
        for i in range(50):  # queued in one go, so they land in one or few batches
            ops.append(store.commit_step(lease, step("r1", f"a{i}", i)))
            ops.append(store.commit_step(stale, step("r1", f"stale{i}")))
            ops.append(store.cas_state("r1", 0, {"lost": i}))
        results = await asyncio.gather(*ops, return_exceptions=True)
        assert results[0::3] == [True] * 50
        assert all(isinstance(r, StaleLease) for r in results[1::3])
        assert all(isinstance(r, StateConflict) for r in results[2::3])
        steps = await store.get_steps("r1")
        assert list(steps) == [f"a{i}" for i in range(50)]
        assert all(s.status is StepStatus.SUCCEEDED for s in steps.values())
        assert await store.get_state("r1") == (1, {})


async def test_two_stores_on_one_file_share_state(tmp_path: Path) -> None:
    """Two orchestrators (processes, here two stores) fence each other through the file."""
    path = tmp_path / "fb.db"
    async with SQLiteStore(path) as one, SQLiteStore(path) as two:
        lease = await leased(one)
        await two.create_run("r2", "wf", None)
        assert await two.get_run("r1") is not None
        assert await one.commit_step(lease, step("r1", "a"))
        assert list(await two.get_steps("r1")) == ["a"]


async def test_damaged_pages_read_as_store_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "fb.db"
    async with SQLiteStore(path) as store:
        lease = await leased(store)
        for i in range(200):
            await store.commit_step(lease, step("r1", f"a{i}", "x" * 200))
    data = bytearray(path.read_bytes())
    page = 4096
    data[page:] = b"\xa5" * (len(data) - page)  # keep the header page, ruin every other one
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt):
        async with SQLiteStore(path) as store:
            await store.get_steps("r1")


async def test_values_json_cannot_hold_are_refused_clearly(tmp_path: Path) -> None:
    """A cycle, NaN or a foreign object: a clear error, and nothing stored."""
    cyclic: list[object] = []
    cyclic.append(cyclic)
    async with SQLiteStore(tmp_path / "fb.db") as store:
        with pytest.raises(ValueError, match="Circular reference"):
            await store.create_run("r1", "wf", {"items": cyclic})
        with pytest.raises(ValueError, match="Out of range float"):
            await store.create_run("r1", "wf", float("nan"))
        with pytest.raises(TypeError, match="not JSON serializable"):
            await store.create_run("r1", "wf", {"when": object()})
        assert await store.get_run("r1") is None
        run, created = await store.create_run("r1", "wf", {"ü": [1, 2.5, None, True]})
        assert created
        assert run.input == {"ü": [1, 2.5, None, True]}
