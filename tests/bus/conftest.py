"""Bus test fixtures: a factory per backend, each test with its own names.

Redis comes from ``$FIREBREAK_TEST_REDIS_URL`` (default DB 15); an unreachable server
skips the test, or fails it under ``CI=true`` (`tests/servers.py`).
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from firebreak.bus import BusPolicy, TaskBus
from firebreak.bus.inproc import InprocBus
from firebreak.bus.redis import RedisBus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from servers import require_server

REDIS_URL = os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
BACKENDS = ("inproc", "redis")

Factory = Callable[[BusPolicy], AbstractAsyncContextManager[TaskBus]]


async def _clean_redis(prefix: str) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415 - only the redis tests need it

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


@pytest.fixture
def redis_url() -> str:
    """The test Redis server's URL (skips, or fails under CI, when unreachable)."""
    require_server("redis", REDIS_URL)
    return REDIS_URL


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own."""
    return f"fbtest-bus-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=BACKENDS)
async def make_bus(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Factory]:
    """A factory of set-up buses of one backend; Redis keys are removed afterwards."""
    kind = request.param
    if kind == "redis":
        require_server("redis", REDIS_URL)

    @asynccontextmanager
    async def make(policy: BusPolicy) -> AsyncIterator[TaskBus]:
        bus: TaskBus
        if kind == "inproc":
            bus = InprocBus(name=prefix, policy=policy)
        else:
            bus = RedisBus(REDIS_URL, prefix=prefix, policy=policy)
        async with bus:
            yield bus

    yield make
    if kind == "redis":
        await _clean_redis(prefix)
