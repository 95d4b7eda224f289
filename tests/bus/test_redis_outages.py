"""A Redis bus consumer rides out what a real deployment throws at it (real Redis): the
connection cut and back, an entry that is not UTF-8, its stream deleted under a read."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from urllib.parse import urlsplit, urlunsplit

import pytest

from firebreak.bus import BusPolicy
from firebreak.bus.redis import RedisBus


class Proxy:
    """A TCP proxy to the Redis server that can be cut (every connection closed, no new
    one accepted) and restored on the same port: a network blip, as a worker sees it."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._writers |= {writer, up_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers -= {writer, up_writer}


def through(url: str, proxy: Proxy) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{proxy.listen_port}"))


async def test_a_consumer_rides_out_a_cut_connection(
    redis_url: str, prefix: str, redis_keys: object, caplog: pytest.LogCaptureFixture
) -> None:
    """Reads while the server is out of reach return nothing (said once in the log), and
    the consumer goes on when it is back: a worker must not exit on a network blip."""
    parts = urlsplit(redis_url)
    proxy = Proxy(parts.hostname or "127.0.0.1", parts.port or 6379)
    await proxy.start()
    policy = BusPolicy(visibility_timeout=5)
    async with (
        RedisBus(through(redis_url, proxy), prefix=prefix, policy=policy) as far,
        RedisBus(redis_url, prefix=prefix, policy=policy) as near,
    ):
        consumer = far.consumer(["flow.a"], group="workers", name="w", max_in_flight=4)
        await near.publish("flow.a", {"n": 1}, key="r1")
        first = await consumer.get(1.0)
        assert first is not None
        await consumer.ack(first)
        await proxy.cut()
        with caplog.at_level(logging.WARNING, logger="firebreak.bus.redis"):
            for _ in range(3):
                assert await consumer.get(0.05) is None
            await near.publish("flow.a", {"n": 2}, key="r2")
            await proxy.start()  # the same port again
            second = None
            for _ in range(40):
                second = await consumer.get(0.25)
                if second is not None:
                    break
        assert second is not None
        assert second.body == {"n": 2}
        await consumer.ack(second)
        await consumer.close()
        await proxy.cut()
    warnings = [r.getMessage() for r in caplog.records]
    assert sum("reading again until it answers" in w for w in warnings) == 1
    assert sum("reachable again" in w for w in warnings) == 1


async def test_an_entry_that_is_not_utf8_is_dead_lettered_not_fatal(
    redis_bus: RedisBus,
) -> None:
    """Written by someone else, it would have crashed every read (and every worker restart)."""
    bus = redis_bus
    consumer = bus.consumer(["flow.a"], group="workers", name="w", max_in_flight=4)
    assert await consumer.get(0.01) is None  # the group exists
    await bus.client.xadd(bus.stream("flow.a"), {"b": b"\xff\xfe", "k": b"\xff"})
    await bus.publish("flow.a", {"n": 1}, key="r1")
    dead = await consumer.get(1.0)
    assert dead is not None
    assert dead.dead
    assert dead.reason == "unreadable body"
    good = await consumer.get(1.0)
    assert good is not None
    assert good.body == {"n": 1}
    await consumer.ack(good)
    assert [d.reason for d in await bus.dead_letters("flow.a")] == ["unreadable body"]
    await consumer.close()


async def test_a_stream_deleted_under_a_blocked_read_is_made_again(redis_bus: RedisBus) -> None:
    bus = redis_bus
    consumer = bus.consumer(["flow.a"], group="workers", name="w", max_in_flight=4)
    reading = asyncio.create_task(consumer.get(2.0))
    await asyncio.sleep(0.2)  # blocked in XREADGROUP
    await bus.client.delete(bus.stream("flow.a"))
    assert await reading is None  # UNBLOCKED: the stream and group are made again
    await bus.publish("flow.a", {"n": 1}, key="r1")
    got = await consumer.get(1.0)
    assert got is not None
    assert got.body == {"n": 1}
    await consumer.ack(got)
    await consumer.close()
