"""Fixtures binding the store contract tests to PostgreSQL.

The server comes from ``$FIREBREAK_TEST_POSTGRES_URL`` (default: the local one). Each test
gets its own schema, dropped afterwards. A server that cannot be reached skips the test
with the reason, except under ``CI=true``, where it fails: CI must not pass by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable

import psycopg
import pytest

from firebreak.store.postgres import PostgresStore
from firebreak.testing import FakeClock

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"

_reachable: dict[str, str | None] = {}


def postgres_url() -> str:
    """The test server's URL."""
    return os.environ.get("FIREBREAK_TEST_POSTGRES_URL") or DEFAULT_URL


def require_postgres(url: str) -> None:
    """Skip (or, under CI, fail) the current test if `url` cannot be reached."""
    if url not in _reachable:
        try:
            with psycopg.connect(url, connect_timeout=3) as conn:
                conn.execute("SELECT 1")
            _reachable[url] = None
        except psycopg.Error as exc:
            _reachable[url] = " ".join(str(exc).split())
    problem = _reachable[url]
    if problem is not None:
        message = f"PostgreSQL at {url} is not reachable: {problem}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)


def unique_schema() -> str:
    """A schema name no other test uses."""
    return f"fbtest_{uuid.uuid4().hex[:16]}"


@pytest.fixture
def pg_url() -> str:
    url = postgres_url()
    require_postgres(url)
    return url


@pytest.fixture
def wall() -> FakeClock:
    """A clock moved by hand: lease expiry is tested without sleeping."""
    return FakeClock(autojump=False)


@pytest.fixture
async def make_store(pg_url: str, wall: FakeClock) -> AsyncIterator[Callable[..., PostgresStore]]:
    """Build stores on one fresh schema (unless told another); all dropped afterwards."""
    schema = unique_schema()
    made: list[PostgresStore] = []

    def make(kind: str = "postgres", **options: object) -> PostgresStore:
        options.setdefault("schema", schema)
        options.setdefault("clock", wall.wall)
        store = PostgresStore(pg_url, **options)  # type: ignore[arg-type]
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()
    dropped: set[str] = set()
    for store in made:
        if store.schema not in dropped:
            dropped.add(store.schema)
            await store.destroy()


@pytest.fixture
async def store(make_store: Callable[..., PostgresStore]) -> AsyncIterator[PostgresStore]:
    async with make_store("postgres") as opened:
        yield opened
