"""How `PostgresStore` reaches its server: the connection string, the pool, one-line errors.

Every connection runs with ``search_path`` set to the store's schema (the SQL names no
schema) and an ``application_name`` naming the host and process (the audit trail records
it). Pooled connections are checked before use only when they look suspect (`check`).
"""

from __future__ import annotations

import os
import re
import select
import socket
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from firebreak.errors import StoreError

__all__ = ["SCHEMA_NAME", "check", "conninfo", "open_pool", "translate"]

SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,52}")  # 53 + len("firebreak_") fits NAMEDATALEN


def _one_line(text: str) -> str:
    return " ".join(text.split())


def conninfo(url: str, *, schema: str, timeout: float) -> tuple[str, str]:
    """The libpq connection string for `schema`, and the server's name for messages.

    The name (``postgres host:port/dbname``) never holds the password. `ValueError` for
    a URL libpq cannot read.
    """
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as exc:
        raise ValueError(f"bad PostgreSQL URL: {_one_line(str(exc))}") from None
    host, port, dbname = params.get("host"), params.get("port"), params.get("dbname")
    where = f"postgres {host or 'localhost'}:{port or 5432}/{dbname or '(default)'}"
    options = f"{params.get('options') or ''} -c search_path={schema}".strip()
    params["options"] = options
    params.setdefault("application_name", f"firebreak:{socket.gethostname()}:{os.getpid()}")
    params.setdefault("connect_timeout", str(max(2, round(timeout))))
    return make_conninfo("", **params), where


async def check(conn: psycopg.AsyncConnection[Any]) -> None:
    """Check a pooled connection before use; a round trip only if it looks suspect.

    An idle connection has nothing to read: if its socket is readable, the server has
    closed it or sent something (a shutdown notice, say), and an empty query decides.
    `AsyncConnectionPool.check_connection` on every checkout would double the round trips
    of every operation.
    """
    if conn.closed or conn.broken:
        raise psycopg.OperationalError("the connection is closed")
    try:
        readable = bool(select.select([conn.fileno()], [], [], 0)[0])
    except (OSError, ValueError):
        readable = True
    if readable:
        await AsyncConnectionPool.check_connection(conn)


async def open_pool(
    info: str, *, size: int, connect_within: float, name: str
) -> AsyncConnectionPool[Any]:
    """Open a pool of autocommit connections, one of them made before it returns.

    `connect_within`: seconds to open it, and seconds an operation waits for a connection.
    """
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        info,
        kwargs={"autocommit": True},
        min_size=1,
        max_size=size,
        open=False,
        check=check,
        timeout=connect_within,
        name=name,
    )
    try:
        await pool.open(wait=True, timeout=connect_within)
    except (psycopg.Error, PoolTimeout):
        await pool.close()
        raise
    return pool


def translate(exc: BaseException, *, where: str, timeout: float) -> BaseException:
    """A driver or pool error as a one-line `StoreError` naming the server (`where`)."""
    if isinstance(exc, StoreError):
        return exc
    if isinstance(exc, PoolTimeout):
        message = f"no connection within {timeout:g} s (is the server up?)"
    elif isinstance(exc, psycopg.Error):
        message = _one_line(str(exc)) or type(exc).__name__
        if exc.sqlstate:
            message = f"{message} [{exc.sqlstate}]"
    else:
        message = _one_line(str(exc)) or type(exc).__name__
    err = StoreError(f"{where}: {message}")
    err.__cause__ = exc
    return err
