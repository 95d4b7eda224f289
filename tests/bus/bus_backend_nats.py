"""The NATS JetStream backend for the bus tests (`conftest.py` plugs it in by its name).

The server comes from ``$FIREBREAK_TEST_NATS_URL`` (default ``nats://127.0.0.1:4222``); an
unreachable one skips the tests, or fails them under ``CI=true`` (`tests/servers.py`).
Each test's streams, consumers and bucket are named under its own prefix and deleted
afterwards.
"""

from __future__ import annotations

import contextlib
import os

import nats
import nats.js.errors

from firebreak.bus import BusPolicy
from firebreak.bus.nats import NatsBus, token
from servers import require_server

NATS_URL = os.environ.get("FIREBREAK_TEST_NATS_URL", "nats://127.0.0.1:4222")


def require() -> None:
    """Skip (or fail under CI) when the NATS server is unreachable."""
    require_server("nats", NATS_URL)


def make(prefix: str, policy: BusPolicy) -> NatsBus:
    """A bus under `prefix` (built, not set up)."""
    return NatsBus(NATS_URL, prefix=prefix, policy=policy)


async def stream_names(url: str, prefix: str) -> list[str]:
    """The streams a bus under `prefix` made (queues, dead letters, hand-back bucket)."""
    name = token(prefix)
    marks = (f"{name}_Q_", f"{name}_D_", f"KV_{name}_R")
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        found: list[str] = []
        offset = 0
        while True:
            page = await js.streams_info(offset=offset)
            if not page:
                break
            offset += len(page)
            found += [
                info.config.name
                for info in page
                if info.config.name and info.config.name.startswith(marks)
            ]
        return found
    finally:
        await nc.close()


async def cleanup(prefix: str, url: str = NATS_URL) -> None:
    """Delete every stream (with its consumers) made under `prefix`."""
    names = await stream_names(url, prefix)
    if not names:
        return
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        for name in names:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(name)
    finally:
        await nc.close()
