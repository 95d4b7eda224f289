"""The Redis bus sends the commands of one loop turn, or made while a batch is in flight, as
one ``MULTI``/``EXEC`` pipeline, and the publishes among them as one script call (real
Redis)."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest
from redis.exceptions import ResponseError

from firebreak.bus import BusPolicy, _redis_consumer
from firebreak.bus import redis as redis_module
from firebreak.bus.redis import _ACK_MANY, RedisBus


@pytest.fixture
def bus(redis_bus: RedisBus) -> RedisBus:
    """The test Redis bus of conftest (keys removed afterwards)."""
    return redis_bus


async def test_concurrent_publishes_share_pipelines_and_keep_their_order(bus: RedisBus) -> None:
    """50 publishes at once: fewer round trips than publishes, the queue in publish order."""
    await asyncio.gather(*(bus.publish("q", {"n": n}, key="k") for n in range(50)))
    assert bus.batch.pipelines >= 1
    consumer = bus.consumer(["q"], group="g", name="c", max_in_flight=100)
    got = []
    while (delivery := await consumer.get(0.1)) is not None:
        got.append(delivery)
    assert [d.body["n"] for d in got] == list(range(50))
    await consumer.close()


async def test_a_failing_command_fails_only_its_own_caller(bus: RedisBus) -> None:
    """A command the server refuses (a queue key of the wrong type) raises for its caller;
    the others of its pipeline go through."""
    await bus.client.set(bus.stream("bad"), "not a stream")
    results = await asyncio.gather(
        *(bus.publish("bad" if n % 3 == 1 else "good", {"n": n}, key="k") for n in range(9)),
        return_exceptions=True,
    )
    assert [isinstance(r, ResponseError) for r in results] == [n % 3 == 1 for n in range(9)]
    assert await bus.client.xlen(bus.stream("good")) == 6


def _unknown_script(bus: RedisBus) -> str:
    """`_ACK_MANY` with a comment of its own: a script the server has surely never seen."""
    source = f"{_ACK_MANY}\n-- {uuid.uuid4().hex}"
    bus._sha[source] = hashlib.sha1(source.encode()).hexdigest()  # noqa: S324
    return source


async def test_a_script_the_server_lost_is_loaded_again_alone_and_in_a_batch(
    bus: RedisBus,
) -> None:
    """A script missing on the server (after a restart) is loaded and run, whether it went
    out alone or in a pipeline."""
    ids = [await bus.publish("q", {"n": n}, key="k") for n in range(3)]
    consumer = bus.consumer(["q"], group="g", name="c", max_in_flight=10)
    for _ in ids:
        assert await consumer.get(0.5) is not None
    stream = [bus.stream("q")]
    assert await bus._script(_unknown_script(bus), stream, ["g", ids[0]]) == 1
    before = bus.batch.pipelines
    both = await asyncio.gather(  # made in one turn of the loop: one pipeline
        bus._script(_unknown_script(bus), stream, ["g", ids[1]]),
        bus._script(_unknown_script(bus), stream, ["g", ids[2]]),
    )
    assert both == [1, 1]
    assert bus.batch.pipelines > before
    assert await bus.client.xlen(bus.stream("q")) == 0
    await consumer.close()


async def test_ack_many_acks_and_deletes_every_delivery(bus: RedisBus) -> None:
    """`ack_many` settles several deliveries of several queues in one go."""
    for n in range(6):
        await bus.publish("a" if n % 2 else "b", {"n": n}, key="k")
    consumer = bus.consumer(["a", "b"], group="g", name="c", max_in_flight=10)
    got = []
    while (delivery := await consumer.get(0.1)) is not None:
        got.append(delivery)
    assert len(got) == 6
    assert consumer.in_flight == 6
    await consumer.ack_many(got)
    assert consumer.in_flight == 0
    for queue in ("a", "b"):
        assert await bus.client.xlen(bus.stream(queue)) == 0
        assert (await bus.client.xpending(bus.stream(queue), "g"))["pending"] == 0
    await consumer.close()


async def test_acked_messages_are_not_delivered_again(bus: RedisBus) -> None:
    """Acks sent together in a pipeline are acks: nothing comes back after the timeout."""
    await asyncio.gather(*(bus.publish("q", {"n": n}, key="k") for n in range(20)))
    policy = BusPolicy(visibility_timeout=0.2)
    async with RedisBus(bus.url, prefix=bus.prefix, policy=policy) as short:
        consumer = short.consumer(["q"], group="g", name="c", max_in_flight=20)
        got = []
        while (delivery := await consumer.get(0.1)) is not None:
            got.append(delivery)
        await asyncio.gather(*(consumer.ack(d) for d in got))
        assert short.batch.pipelines >= 1
        await asyncio.sleep(0.3)
        other = short.consumer(["q"], group="g", name="d", max_in_flight=20)
        assert await other.get(0.3) is None
        await consumer.close()
        await other.close()


async def test_commands_of_one_loop_turn_leave_as_one_pipeline(bus: RedisBus) -> None:
    """Commands issued in one turn of the event loop cost one round trip, the first too."""
    before = bus.batch.pipelines
    await asyncio.gather(*(bus.publish("q", {"n": n}, key="k") for n in range(20)))
    assert bus.batch.pipelines == before + 1
    await bus.publish("q", {"n": 20}, key="k")  # a lone one goes out alone
    assert bus.batch.pipelines == before + 2


async def test_a_blocked_consumer_is_woken_with_the_whole_batch(bus: RedisBus) -> None:
    """Publishes leaving together reach a consumer blocked on the queue in one read, not
    the first alone (the batch is applied as a unit before blocked readers are served)."""
    consumer = bus.consumer(["q"], group="g", name="c", max_in_flight=100)
    assert await consumer.get(0.05) is None  # the group exists; the next get blocks
    reading = asyncio.ensure_future(consumer.get(5.0))
    await asyncio.sleep(0.1)  # the XREADGROUP is blocked on the server
    await asyncio.gather(*(bus.publish("q", {"n": n}, key="k") for n in range(30)))
    first = await reading
    assert first is not None
    assert len(consumer._buffer) == 29  # the rest came in the same read
    await consumer.close()


async def test_a_busy_consumer_reads_again_once_its_messages_are_settled(
    bus: RedisBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A consumer holding a message waits (up to `_LINGER`) for it to be settled before it
    reads again, so messages published meanwhile, one by one, come in one read."""
    monkeypatch.setattr(_redis_consumer, "_LINGER", 30.0)  # ended by the ack here, not by time
    consumer = bus.consumer(["q"], group="g", name="c", max_in_flight=10)
    await bus.publish("q", {"n": 0}, key="k")
    held = await consumer.get(1.0)
    assert held is not None
    reading = asyncio.ensure_future(consumer.get(5.0))
    for n in range(1, 4):
        await bus.publish("q", {"n": n}, key="k")  # a pipeline each
    assert not reading.done()
    await consumer.ack(held)
    first = await reading
    assert first is not None
    assert [first.body["n"], *(d.body["n"] for d in consumer._buffer)] == [1, 2, 3]
    await consumer.close()


async def test_the_publishes_of_a_batch_are_one_command(
    bus: RedisBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publishes leaving together are one script call, not a transaction of ``XADD``s, and
    each publisher still gets its own message id."""
    sent: list[list[tuple[object, ...]]] = []
    execute = bus.batch._execute

    async def recording(commands: list[tuple[object, ...]]) -> list[object]:
        sent.append(commands)
        return await execute(commands)

    monkeypatch.setattr(bus.batch, "_execute", recording)
    ids = await asyncio.gather(*(bus.publish("q", {"n": n}, key="k") for n in range(20)))
    assert len(sent) == 1
    assert [command[0] for command in sent[0]] == ["EVALSHA"]
    entries = await bus.client.xrange(bus.stream("q"))
    assert [entry[0].decode() for entry in entries] == ids


async def test_a_publish_script_the_server_lost_is_loaded_again(bus: RedisBus) -> None:
    """The publishing script missing on the server (after a restart) is loaded, and the
    publishes of its batch go through."""
    source = f"{redis_module._PUBLISH}\n-- {uuid.uuid4().hex}"
    bus.batch._publish = (source, hashlib.sha1(source.encode()).hexdigest())  # noqa: S324
    ids = await asyncio.gather(*(bus.publish("q", {"n": n}, key="k") for n in range(5)))
    assert len(set(ids)) == 5
    assert await bus.client.xlen(bus.stream("q")) == 5


async def test_publishes_in_one_script_keep_non_ascii_keys_and_bodies(bus: RedisBus) -> None:
    """A message's key and body reach the consumer unchanged when its publish went out in
    the batch's script (its JSON argument carries them as UTF-8)."""
    keys = ["clé-✓", "ключ\u2028", "k\x00z"]
    await asyncio.gather(*(bus.publish("q", {"text": key * 2}, key=key) for key in keys))
    consumer = bus.consumer(["q"], group="g", name="c", max_in_flight=10)
    got = []
    while (delivery := await consumer.get(0.1)) is not None:
        got.append(delivery)
    assert [(d.key, d.body["text"]) for d in got] == [(key, key * 2) for key in keys]
    await consumer.close()
