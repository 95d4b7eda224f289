"""Bus test fixtures: a factory per backend, each test with its own names.

Redis comes from ``$FIREBREAK_TEST_REDIS_URL`` (default DB 15); an unreachable server
skips the test, or fails it under ``CI=true`` (`tests/servers.py`).
"""

from __future__ import annotations

import importlib
import os
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from firebreak.bus import BusPolicy, TaskBus
from firebreak.bus.inproc import InprocBus
from firebreak.bus.redis import RedisBus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from processes import HERE, Procs

import redis
from servers import require_server

REDIS_URL = os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
# Further backends plug in as modules `bus_backend_<kind>.py` beside this file, each with
# `require() -> None` (skip, or fail under CI, when its server is unreachable),
# `make(prefix: str, policy: BusPolicy) -> TaskBus` (built, not set up) and
# `async cleanup(prefix: str) -> None`.
PLUGGED = tuple(
    kind
    for kind in ("rabbitmq", "nats", "kafka")
    if (Path(__file__).parent / f"bus_backend_{kind}.py").is_file()
)
BACKENDS = ("inproc", "redis", *PLUGGED)

Factory = Callable[[BusPolicy], AbstractAsyncContextManager[TaskBus]]


async def _clean_redis(prefix: str) -> None:
    import redis.asyncio as aioredis  # noqa: PLC0415 - only the redis tests need it

    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        # `{prefix}*`, not `{prefix}:*`: tests also build prefixes on theirs ("<prefix>-bus"),
        # and the prefix ends in random hex, so nothing of another test matches.
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
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
    plugged = importlib.import_module(f"bus_backend_{kind}") if kind in PLUGGED else None
    if kind == "redis":
        require_server("redis", REDIS_URL)
    elif plugged is not None:
        plugged.require()

    @asynccontextmanager
    async def make(policy: BusPolicy) -> AsyncIterator[TaskBus]:
        bus: TaskBus
        if kind == "inproc":
            bus = InprocBus(name=prefix, policy=policy)
        elif kind == "redis":
            bus = RedisBus(REDIS_URL, prefix=prefix, policy=policy)
        else:
            bus = plugged.make(prefix, policy)  # type: ignore[union-attr]
        async with bus:
            yield bus

    # A backend whose consumers join slowly runs the checks on a longer clock.
    make.time_scale = getattr(plugged, "TIME_SCALE", 1.0)  # type: ignore[attr-defined]
    yield make
    if kind == "redis":
        await _clean_redis(prefix)
    elif plugged is not None:
        await plugged.cleanup(prefix)


@pytest.fixture
async def redis_keys(redis_url: str, prefix: str) -> AsyncIterator[Any]:
    """An async client of the test Redis; every key under this test's prefix goes afterwards."""
    import redis.asyncio as aioredis  # noqa: PLC0415 - only the redis tests need it

    client = aioredis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        await client.aclose()
        await _clean_redis(prefix)


@pytest.fixture
async def redis_bus(redis_url: str, prefix: str) -> AsyncIterator[RedisBus]:
    """A set-up Redis bus under this test's prefix (visibility 5 s); its keys go afterwards."""
    policy = BusPolicy(visibility_timeout=5)
    try:
        async with RedisBus(redis_url, prefix=prefix, policy=policy) as bus:
            yield bus
    finally:
        await _clean_redis(prefix)


@pytest.fixture
def sink(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """The Redis holding the store and the effects sink; this test's keys go afterwards."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        found = list(client.scan_iter(match=f"{prefix}*"))
        if found:
            client.delete(*found)
        client.close()


@pytest.fixture
def procs(tmp_path: Path, redis_url: str, prefix: str) -> Iterator[Procs]:
    """This test's child processes (effects go to the sink); all killed at the end."""
    env = dict(os.environ, FBTEST_SINK=f"{redis_url}|{prefix}-sink", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    running = Procs(tmp_path, env)
    try:
        yield running
    finally:
        running.stop_all()
