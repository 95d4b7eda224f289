"""Store factories for the conformance suite, one per backend; each test gets its own namespace.

memory and sqlite always run. redis and postgres run once `firebreak.store.redis` /
`firebreak.store.postgres` exist (until then they skip, saying so) against the servers
named by ``FIREBREAK_TEST_REDIS_URL`` / ``FIREBREAK_TEST_POSTGRES_URL``; an unreachable
server skips the test, or fails it under ``CI=true`` (see ``tests/servers.py``).
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firebreak.store import CheckpointStore, MemoryStore, SQLiteStore, WallClock
from firebreak.testing import StoreFactory, StoreMaker
from servers import require_server

BACKENDS = ("memory", "sqlite", "redis", "postgres")

REDIS_URL_ENV = "FIREBREAK_TEST_REDIS_URL"
REDIS_URL_DEFAULT = "redis://127.0.0.1:6379/15"
POSTGRES_URL_ENV = "FIREBREAK_TEST_POSTGRES_URL"
POSTGRES_URL_DEFAULT = "postgresql://postgres@127.0.0.1:5432/postgres"


def _memory() -> StoreFactory:
    return lambda clock: MemoryStore(clock=clock)


def _sqlite(tmp_path: Path) -> StoreFactory:
    @asynccontextmanager
    async def namespace(clock: WallClock) -> AsyncIterator[StoreMaker]:
        path = tmp_path / "conformance.db"  # tmp_path is the test's own; pytest removes it
        yield lambda: SQLiteStore(path, clock=clock)

    return namespace


def _backend_class(module_name: str, class_name: str) -> Any:
    """The backend's class, or skip: it is being written and may not exist yet."""
    if importlib.util.find_spec(module_name) is None:
        pytest.skip(f"{module_name} not available")
    module = importlib.import_module(module_name)  # a broken module errors, never skips
    cls = getattr(module, class_name, None)
    if cls is None:
        pytest.skip(f"{module_name}.{class_name} not available")
    return cls


def _server_namespace(make: Callable[[str, WallClock], CheckpointStore]) -> StoreFactory:
    """A namespace (key prefix, schema) unique to the test, destroyed when it ends."""

    @asynccontextmanager
    async def namespace(clock: WallClock) -> AsyncIterator[StoreMaker]:
        name = f"fbconf_{uuid.uuid4().hex[:16]}"
        try:
            yield lambda: make(name, clock)
        finally:
            async with make(name, clock) as store:
                await store.destroy()  # type: ignore[attr-defined]  # server backends only

    return namespace


def _redis() -> StoreFactory:
    redis_store = _backend_class("firebreak.store.redis", "RedisStore")
    url = os.environ.get(REDIS_URL_ENV, REDIS_URL_DEFAULT)
    require_server("redis", url)
    return _server_namespace(lambda prefix, clock: redis_store(url, prefix=prefix, clock=clock))


def _postgres() -> StoreFactory:
    postgres_store = _backend_class("firebreak.store.postgres", "PostgresStore")
    url = os.environ.get(POSTGRES_URL_ENV, POSTGRES_URL_DEFAULT)
    require_server("postgres", url)
    return _server_namespace(lambda schema, clock: postgres_store(url, schema=schema, clock=clock))


def store_factory(backend: str, tmp_path: Path) -> StoreFactory:
    """The factory for `backend`; skips (or, for an unreachable server in CI, fails)."""
    if backend == "memory":
        return _memory()
    if backend == "sqlite":
        return _sqlite(tmp_path)
    if backend == "redis":
        return _redis()
    if backend == "postgres":
        return _postgres()
    raise ValueError(f"unknown backend {backend!r}")
