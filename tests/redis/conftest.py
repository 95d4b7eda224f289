"""Fixtures for tests against a real Redis: ``$FIREBREAK_TEST_REDIS_URL`` (default DB 15).

Without a reachable server the tests skip with the reason shown; under ``CI=true`` they
fail instead, so a CI job cannot pass by silently testing nothing.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

import redis
from firebreak.store import CheckpointStore
from firebreak.store.redis import RedisStore
from firebreak.testing import FakeClock

# The store tests' helpers (leased, step) are imported by module name.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "store"))

REDIS_URL = os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
_reachable: str | None = None  # None: not checked yet; "" ok; else the reason


def _check() -> str:
    global _reachable  # noqa: PLW0603 - checked once per test run
    if _reachable is None:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=1)
        try:
            client.ping()
            _reachable = ""
        except redis.RedisError as exc:
            _reachable = (
                f"Redis at {REDIS_URL} is unreachable ({exc}); set FIREBREAK_TEST_REDIS_URL"
            )
        finally:
            client.close()
    return _reachable


@pytest.fixture
def redis_url() -> str:
    """The test server's URL; skips (or fails under CI=true) when it is down."""
    reason = _check()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"fbtest-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def wall() -> FakeClock:
    """A clock moved by hand: lease expiry is tested without sleeping."""
    return FakeClock(autojump=False)


@pytest.fixture
def make_store(redis_url: str, prefix: str, wall: FakeClock) -> Callable[..., RedisStore]:
    def make(kind: str = "redis", **kw: object) -> RedisStore:
        return RedisStore(redis_url, prefix=prefix, clock=wall.wall, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def store(make_store: Callable[..., RedisStore]) -> AsyncIterator[CheckpointStore]:
    async with make_store() as opened:
        try:
            yield opened
        finally:
            await opened.destroy()
