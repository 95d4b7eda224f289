"""Reply streams on the Redis bus expire unless used, and come back if they vanish (real
Redis): an orchestrator that dies leaves no stream behind for good."""

from __future__ import annotations

import pytest

from firebreak.bus import BusPolicy
from firebreak.bus.base import REPLY_PREFIX
from firebreak.bus.redis import RedisBus, from_url

REPLIES = f"{REPLY_PREFIX}o1"


async def test_replies_give_their_stream_a_time_to_live_and_tasks_do_not(
    redis_bus: RedisBus,
) -> None:
    """A reply published, and a reply sent with an ack, each set the reply stream's time
    to live; a task stream keeps no expiry."""
    bus = redis_bus
    await bus.publish(REPLIES, {"kind": "held"}, key="r")
    await bus.publish("flow.a", {"n": 1}, key="r")
    assert 0 < await bus.client.pttl(bus.stream(REPLIES)) <= bus.reply_ttl * 1000
    assert await bus.client.pttl(bus.stream("flow.a")) == -1  # no expiry
    await bus.client.persist(bus.stream(REPLIES))
    consumer = bus.consumer(["flow.a"], group="workers", name="w", max_in_flight=1)
    task = await consumer.get(1.0)
    assert task is not None
    await consumer.reply_and_ack(task, REPLIES, {"kind": "committed"}, key="r")
    assert 0 < await bus.client.pttl(bus.stream(REPLIES)) <= bus.reply_ttl * 1000
    assert await bus.client.pttl(bus.stream("flow.a")) == -1
    await consumer.close()


async def test_a_reply_stream_that_vanished_under_its_reader_is_made_again(
    redis_bus: RedisBus,
) -> None:
    """Its stream gone (expired while the orchestrator was frozen, or deleted), the reader's
    next read makes stream and group again, renews the time to live, and reads on."""
    bus = redis_bus
    reader = bus.consumer([REPLIES], group="orchestrator", name="o1", max_in_flight=8)
    assert await reader.get(0.05) is None
    assert 0 < await bus.client.pttl(bus.stream(REPLIES)) <= bus.reply_ttl * 1000
    await bus.client.delete(bus.stream(REPLIES))
    assert await reader.get(0.05) is None  # NOGROUP, then the group again
    assert 0 < await bus.client.pttl(bus.stream(REPLIES)) <= bus.reply_ttl * 1000
    await bus.publish(REPLIES, {"kind": "committed"}, key="r")
    got = await reader.get(1.0)
    assert got is not None
    assert got.body == {"kind": "committed"}
    await reader.ack(got)
    await reader.close()


async def test_a_reader_renews_its_reply_stream_while_it_reads(
    redis_url: str, prefix: str, redis_keys: object
) -> None:
    """With a 1 s time to live, a reader renews it every quarter of it: a stream whose
    expiry was cut short gets the full time back on the reader's next read."""
    async with RedisBus(redis_url, prefix=prefix, policy=BusPolicy(), reply_ttl=1) as bus:
        reader = bus.consumer([REPLIES], group="orchestrator", name="o1", max_in_flight=8)
        assert await reader.get(0.3) is None  # made the stream, renews again after 0.25 s
        await bus.client.pexpire(bus.stream(REPLIES), 200)
        assert await reader.get(0.05) is None
        assert await bus.client.pttl(bus.stream(REPLIES)) > 500
        await reader.close()


def test_the_time_to_live_comes_from_the_url_and_must_be_a_second_or_more() -> None:
    assert from_url("redis://localhost:6379/0?reply_ttl=30").reply_ttl == 30
    assert from_url("redis://localhost:6379/0").reply_ttl == 600
    with pytest.raises(ValueError, match="reply_ttl"):
        from_url("redis://localhost:6379/0?reply_ttl=0.5")
