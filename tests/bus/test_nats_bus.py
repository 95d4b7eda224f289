"""NATS JetStream bus specifics beyond the shared conformance suite (`bus_backend_nats`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import bus_backend_nats
import pytest

from firebreak.bus import BusPolicy, open_bus
from firebreak.bus.base import REPLY_PREFIX
from firebreak.bus.nats import NatsBus, NatsReplyConsumer, from_url, token

POLICY = BusPolicy(visibility_timeout=0.3, max_deliveries=3)


@pytest.fixture
async def bus(prefix: str) -> AsyncIterator[NatsBus]:
    bus_backend_nats.require()
    opened = bus_backend_nats.make(prefix, POLICY)
    try:
        async with opened:
            yield opened
    finally:
        await bus_backend_nats.cleanup(prefix)


def test_from_url_reads_options_and_open_bus_routes_nats() -> None:
    bus = from_url(
        "nats://u:p@h1:4222,h2:4223?prefix=billing&visibility_timeout=7&max_deliveries=2"
        "&storage=memory&publish_timeout=3"
    )
    assert bus.servers == ["nats://u:p@h1:4222", "nats://u:p@h2:4223"]
    assert (bus.prefix, bus.policy.visibility, bus.policy.max_deliveries) == ("billing", 7, 2)
    assert (bus.storage.value, bus.publish_timeout) == ("memory", 3)
    assert isinstance(open_bus("nats://localhost:4222"), NatsBus)
    with pytest.raises(ValueError, match="unknown option"):
        from_url("nats://localhost?bogus=1")
    with pytest.raises(ValueError, match="storage"):
        from_url("nats://localhost?storage=disk")
    with pytest.raises(ValueError, match="max_deliveries"):
        from_url("nats://localhost?max_deliveries=0")


def test_names_are_escaped_injectively() -> None:
    assert token("busbatch.a") == "busbatch_2ea"
    assert token("a_b") != token("a.b") != token("a b")
    assert token("é") == "_c3_a9"
    bus = NatsBus(prefix="p_Q_x")
    assert bus.stream("q") != NatsBus(prefix="p").stream("x_Q_q")
    assert "." not in bus.stream("a.b*>")
    assert bus.subject("a.b*>").count(".") == 2


async def test_several_releases_do_not_count_and_the_count_is_forgotten(bus: NatsBus) -> None:
    queue = "rel"
    await bus.publish(queue, {"n": 1}, key="r")
    consumer = bus.consumer([queue], group="g", name="c")
    for _ in range(4):  # more hand-backs than max_deliveries: never dead
        held = await consumer.get(1.0)
        assert held is not None
        assert not held.dead
        assert held.deliveries == 1
        await consumer.release(held)
    held = await consumer.get(1.0)
    assert held is not None
    assert held.deliveries == 1
    await consumer.ack(held)
    assert await bus.releases(queue, int(held.id)) == 0
    assert await consumer.get(0.5) is None
    await consumer.close()


@pytest.mark.parametrize("raw", [b"[1, 2]", b"not json {"])
async def test_unreadable_body_goes_to_the_dead_letters(bus: NatsBus, raw: bytes) -> None:
    """Listed with its id and reason, whatever the body (not JSON at all included)."""
    queue = "bad"
    await bus.ensure_queue(queue)
    await bus.js.publish(bus.subject(queue), raw, stream=bus.stream(queue))
    await bus.publish(queue, {"ok": True}, key="r-2")
    consumer = bus.consumer([queue], group="g", name="c")
    dead = await consumer.get(1.0)
    assert dead is not None
    assert dead.dead
    assert dead.reason == "unreadable body"
    assert consumer.in_flight == 0
    fine = await consumer.get(1.0)
    assert fine is not None
    assert fine.body == {"ok": True}
    assert fine.key == "r-2"
    await consumer.ack(fine)
    letters = await bus.dead_letters(queue)
    assert [(d.id, d.reason) for d in letters] == [(dead.id, "unreadable body")]
    await consumer.close()


async def test_keys_and_bodies_round_trip(bus: NatsBus) -> None:
    queue = "odd name.with*chars>"
    key = "run 1/ä\r\nx"
    await bus.publish(queue, {"text": "ü", "n": [1, 2]}, key=key)
    consumer = bus.consumer([queue], group="workers.x", name="c")
    got = await consumer.get(1.0)
    assert got is not None
    assert got.key == key
    assert got.body == {"text": "ü", "n": [1, 2]}
    await consumer.reject(got, "line one\nline two")
    [letter] = await bus.dead_letters(queue)
    assert (letter.key, letter.body, letter.reason) == (key, got.body, "line one\nline two")
    await consumer.close()
    await bus.delete(queue)
    assert await bus.dead_letters(queue) == []


async def test_one_slot_over_several_queues_holds_one_and_serves_all(bus: NatsBus) -> None:
    queues = ["q0", "q1", "q2"]
    for i, queue in enumerate(queues):
        for j in range(3):
            await bus.publish(queue, {"q": i, "j": j}, key=f"r{i}")
    consumer = bus.consumer(queues, group="g", name="c", max_in_flight=1)
    seen = []
    while (delivery := await consumer.get(1.0)) is not None:
        assert consumer.in_flight == 1
        seen.append((delivery.body["q"], delivery.body["j"]))
        await consumer.ack(delivery)
        if len(seen) == 9:
            break
    assert sorted(seen) == [(i, j) for i in range(3) for j in range(3)]
    for i in range(3):  # each queue in its own order
        assert [j for q, j in seen if q == i] == [0, 1, 2]
    await asyncio.sleep(0.5)  # pulls that were out come back empty: nothing is held
    assert consumer.in_flight == 0
    await consumer.close()


async def test_a_second_group_on_a_queue_is_refused(bus: NatsBus) -> None:
    queue = "one-group"
    await bus.publish(queue, {}, key="r")
    first = bus.consumer([queue], group="a", name="c")
    assert await first.get(1.0) is not None
    with pytest.raises(RuntimeError, match="one group per queue"):
        await bus.ensure_group(queue, "b")
    await first.close()


async def test_closing_hands_back_what_was_pulled_but_not_handed_out(bus: NatsBus) -> None:
    queue = "buffered"
    for i in range(3):
        await bus.publish(queue, {"n": i}, key="r")
    first = bus.consumer([queue], group="g", name="first", max_in_flight=3)
    got = await first.get(1.0)
    assert got is not None
    assert first.in_flight == 3
    await first.ack(got)
    await first.close()
    second = bus.consumer([queue], group="g", name="second", max_in_flight=3)
    rest = [await second.get(0.2), await second.get(0.2)]  # well before the 0.3 s timeout
    assert [(d.body["n"], d.deliveries) for d in rest if d is not None] == [(1, 1), (2, 1)]
    for delivery in rest:
        assert delivery is not None
        await second.ack(delivery)
    await second.close()


async def test_publish_gives_up_after_publish_timeout_when_unreachable(prefix: str) -> None:
    bus_backend_nats.require()
    bus = NatsBus(bus_backend_nats.NATS_URL, prefix=prefix, publish_timeout=0.5)
    async with bus:
        await bus.client.close()  # as if the server were gone for good
        with pytest.raises(Exception):  # noqa: B017 - nats-py's closed-connection error
            await bus.publish(f"q-{uuid.uuid4().hex[:6]}", {}, key="r")


async def test_a_reply_queue_is_a_plain_subject_and_leaves_nothing_on_the_server(
    bus: NatsBus,
) -> None:
    """Replies go over core NATS: the reader gets them (key and body as sent, in order, no
    more than its room at a time) and no JetStream stream is ever made for them."""
    replies = f"{REPLY_PREFIX}o1"
    reader = bus.consumer([replies], group="orchestrator", name="o1", max_in_flight=1)
    assert isinstance(reader, NatsReplyConsumer)
    assert await reader.get(0.05) is None  # subscribed from here on
    for n in range(2):
        await bus.publish(replies, {"n": n}, key="run/ é")
    first = await reader.get(1.0)
    assert first is not None
    assert (first.body, first.key, first.deliveries) == ({"n": 0}, "run/ é", 1)
    assert await reader.get(0.1) is None  # one slot, held
    await reader.release(first)  # back, first in line
    again = await reader.get(1.0)
    assert again is not None
    assert again.body == {"n": 0}
    await reader.ack(again)
    second = await reader.get(1.0)
    assert second is not None
    assert second.body == {"n": 1}
    await reader.reject(second, "not wanted")  # dropped: a notice has no dead letters
    assert reader.in_flight == 0
    assert await bus.dead_letters(replies) == []
    names = [info.config.name for info in await bus.js.streams_info()]
    assert bus.stream(replies) not in names
    await reader.close()
    await bus.delete(replies)  # nothing to delete, and no error


async def test_a_consumer_of_reply_and_task_queues_at_once_is_refused(bus: NatsBus) -> None:
    with pytest.raises(ValueError, match="reply queues or task queues"):
        bus.consumer(["flow.a", f"{REPLY_PREFIX}o1"], group="g", name="c")
