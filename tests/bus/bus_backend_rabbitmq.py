"""The RabbitMQ bus backend for the bus tests (`conftest.py` plugs it in by file name).

The server comes from ``$FIREBREAK_TEST_AMQP_URL`` (default the local guest account); an
unreachable server skips the test, or fails it under ``CI=true`` (`tests/servers.py`).
Each test's queues and exchange are named under its own prefix, deleted by `cleanup`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from urllib.parse import urlsplit

import aio_pika
import aiormq.exceptions

from firebreak.bus import BusPolicy, TaskBus
from firebreak.bus.rabbitmq import RabbitBus
from servers import require_server

AMQP_URL = os.environ.get("FIREBREAK_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")

_made: dict[str, set[str]] = {}  # prefix -> queue names this process declared


def require() -> None:
    """Skip (or fail under CI) when the RabbitMQ server is unreachable."""
    require_server("rabbitmq", AMQP_URL)


class _Tracked(RabbitBus):
    """Remembers the queues it declares, for `cleanup` on a server rabbitmqctl cannot see."""

    async def declare(self, queue: str) -> None:
        _made.setdefault(self.prefix, set()).update((self.queue_name(queue), self.dead_name(queue)))
        await super().declare(queue)


def make(prefix: str, policy: BusPolicy) -> TaskBus:
    """A RabbitMQ bus under `prefix` (built, not set up)."""
    return _Tracked(AMQP_URL, prefix=prefix, policy=policy, publish_retry=5.0)


def _server_queues(prefix: str) -> set[str]:
    """The server's queues under `prefix`, from ``rabbitmqctl`` when the server is local."""
    host = urlsplit(AMQP_URL).hostname or "127.0.0.1"
    tool = shutil.which("rabbitmqctl")
    if tool is None or host not in {"127.0.0.1", "localhost", "::1"}:
        return set()
    try:
        done = subprocess.run(  # noqa: S603 - a fixed tool
            [tool, "list_queues", "-q", "--no-table-headers", "name"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return set()
    return {line.strip() for line in done.stdout.splitlines() if line.startswith(f"{prefix}")}


async def cleanup(prefix: str) -> None:
    """Delete every queue and the dead-letter exchange under `prefix`."""
    names = _server_queues(prefix) | _made.pop(prefix, set())
    connection = await aio_pika.connect(AMQP_URL)
    try:
        for name in sorted(names):
            async with connection.channel(publisher_confirms=False) as channel:
                await channel.queue_delete(name)
        for exchange in (f"{prefix}:dlx", f"{prefix}-bus:dlx"):  # a bus's, a worker's
            with contextlib.suppress(aiormq.exceptions.AMQPError):
                async with connection.channel(publisher_confirms=False) as channel:
                    await channel.exchange_delete(exchange)
    finally:
        await connection.close()
