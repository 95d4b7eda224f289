"""The SQLite schema as an ordered list of migrations, and the check that a file is ours.

``PRAGMA user_version`` counts the migrations applied; ``PRAGMA application_id`` marks the
file as firebreak's, so a stranger's database is refused instead of altered.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from firebreak.errors import StoreCorrupt

__all__ = ["APPLICATION_ID", "MIGRATIONS", "check", "migrate"]

APPLICATION_ID = 0x46425245  # "FBRE"

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: runs, steps, shared state, dead letters, reviews.
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY NOT NULL,
            workflow TEXT NOT NULL,
            status TEXT NOT NULL,
            input TEXT NOT NULL,
            created_at REAL NOT NULL,
            updated_at REAL NOT NULL,
            resume_at REAL,
            result TEXT,
            error TEXT,
            lease_owner TEXT,
            lease_token INTEGER NOT NULL DEFAULT 0,
            lease_expires REAL
        )""",
        "CREATE INDEX runs_by_created ON runs (created_at)",
        "CREATE INDEX runs_by_workflow ON runs (workflow, created_at)",
        "CREATE INDEX runs_paused ON runs (resume_at) WHERE status = 'paused'",
        """CREATE TABLE steps (
            run_id TEXT NOT NULL,
            agent TEXT NOT NULL,
            status TEXT NOT NULL,
            output TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            error TEXT,
            degraded_reason TEXT,
            seq INTEGER NOT NULL,
            completed_at REAL NOT NULL,
            PRIMARY KEY (run_id, agent)
        ) WITHOUT ROWID""",
        # Next seq is MAX(seq) + 1: without this index every commit scans the run's steps.
        "CREATE INDEX steps_by_seq ON steps (run_id, seq)",
        """CREATE TABLE shared_state (
            run_id TEXT PRIMARY KEY NOT NULL,
            version INTEGER NOT NULL,
            data TEXT NOT NULL
        ) WITHOUT ROWID""",
        """CREATE TABLE dead_letters (
            id TEXT PRIMARY KEY NOT NULL,
            run_id TEXT NOT NULL UNIQUE,
            workflow TEXT NOT NULL,
            reason TEXT NOT NULL,
            error TEXT,
            input TEXT NOT NULL,
            steps TEXT,
            created_at REAL NOT NULL
        )""",
        """CREATE TABLE reviews (
            id TEXT PRIMARY KEY NOT NULL,
            run_id TEXT NOT NULL,
            workflow TEXT NOT NULL,
            agent TEXT NOT NULL,
            reason TEXT NOT NULL,
            suggestions TEXT NOT NULL,
            context TEXT NOT NULL,
            status TEXT NOT NULL,
            value TEXT,
            created_at REAL NOT NULL,
            resolved_at REAL
        )""",
        "CREATE UNIQUE INDEX reviews_open ON reviews (run_id, agent) WHERE status = 'open'",
    ),
    (
        # Steps are read one run at a time, a few dozen rows through the primary key, so
        # this index only cost every step commit a second page in the WAL and its fsync.
        "DROP INDEX steps_by_seq",
    ),
    (
        # 3: a run's review items, open and resolved, without reading the whole queue
        # (`review_of_run`: every resume of a run waiting for review).
        "CREATE INDEX reviews_by_run ON reviews (run_id)",
    ),
)
"""Migration N+1 is ``MIGRATIONS[N]``; append, never edit a released one."""

TABLES = frozenset({"runs", "steps", "shared_state", "dead_letters", "reviews"})


def _version(conn: sqlite3.Connection) -> tuple[int, int]:
    user_version = conn.execute("PRAGMA user_version").fetchone()[0]
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    return int(user_version), int(app_id)


def check(conn: sqlite3.Connection, path: Path) -> int:
    """Return the file's schema version, or raise `StoreCorrupt` if it is not ours."""
    version, app_id = _version(conn)
    latest = len(MIGRATIONS)
    tables = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }
    if version == 0 and tables:
        raise StoreCorrupt(
            f"{path} is a SQLite database firebreak did not create "
            f"(tables: {', '.join(sorted(tables))}); refusing to touch it"
        )
    if version and app_id != APPLICATION_ID:
        raise StoreCorrupt(f"{path} is a SQLite database of another application; refusing it")
    if version > latest:
        raise StoreCorrupt(
            f"{path} was written by a newer firebreak (schema {version} > {latest}); "
            "upgrade firebreak to open it"
        )
    if version and not tables <= TABLES:
        raise StoreCorrupt(
            f"{path} holds tables firebreak did not create: {', '.join(sorted(tables - TABLES))}"
        )
    return version


def migrate(conn: sqlite3.Connection, path: Path) -> None:
    """Check the file is ours and apply the migrations it lacks, each in its own transaction.

    The version is re-read under the write lock, so two processes opening a new file at once
    apply each migration exactly once.
    """
    check(conn, path)
    for target, statements in enumerate(MIGRATIONS, start=1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            if check(conn, path) < target:
                for statement in statements:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
