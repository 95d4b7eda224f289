"""RabbitMQ bus specifics beyond the shared conformance suite (`bus_backend_rabbitmq`):
push subscriptions that never let a consumer hold more than ``max_in_flight``, counted at
the broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aio_pika
import aiormq.exceptions
import bus_backend_rabbitmq
import pytest

from firebreak.bus import BusPolicy
from firebreak.bus.base import REPLY_PREFIX
from firebreak.bus.rabbitmq import RabbitBus

POLICY = BusPolicy(visibility_timeout=0.3, max_deliveries=3)
LONG = BusPolicy(visibility_timeout=30, max_deliveries=3)  # nothing lapses during the test


@pytest.fixture(params=[POLICY], ids=["short-visibility"])
async def bus(prefix: str, request: pytest.FixtureRequest) -> AsyncIterator[RabbitBus]:
    bus_backend_rabbitmq.require()
    opened = bus_backend_rabbitmq.make(prefix, request.param)
    assert isinstance(opened, RabbitBus)
    try:
        async with opened:
            yield opened
    finally:
        await bus_backend_rabbitmq.cleanup(prefix)


async def _broker_view(bus: RabbitBus, queue: str) -> tuple[int, int]:
    """(messages ready, consumers) of `queue`, as the broker counts them."""
    async with await bus.channel() as channel:
        declared = await channel.declare_queue(bus.queue_name(queue), passive=True)
        ok = declared.declaration_result
        return ok.message_count or 0, ok.consumer_count or 0


async def test_an_idle_consumer_is_pushed_to_and_polls_only_without_a_slot_per_queue(
    bus: RabbitBus,
) -> None:
    """A consumer with a slot for each of its queues subscribes to each (it does not poll);
    one with fewer slots than queues subscribes to none, and takes with basic.get."""
    queues = ["a", "b"]
    pushed = bus.consumer(queues, group="g", name="pushed", max_in_flight=2)
    assert await pushed.get(0.05) is None
    assert [(await _broker_view(bus, q))[1] for q in queues] == [1, 1]
    await pushed.close()
    polling = bus.consumer(queues, group="g", name="polling", max_in_flight=1)
    assert await polling.get(0.05) is None
    assert [(await _broker_view(bus, q))[1] for q in queues] == [0, 0]
    await bus.publish("b", {"n": 1}, key="r")
    got = await polling.get(2.0)
    assert got is not None
    assert (got.queue, got.body) == ("b", {"n": 1})
    await polling.ack(got)
    await polling.close()


@pytest.mark.parametrize("bus", [LONG], ids=["long-visibility"], indirect=True)
async def test_backpressure_is_exact_at_the_broker_over_several_queues(bus: RabbitBus) -> None:
    """Over 3 queues with max_in_flight 4, the broker hands the consumer 4 messages, never
    more (one push slot per queue, the fourth by basic.get), and one more per ack."""
    queues = ["a", "b", "c"]
    for queue in queues:
        for n in range(4):
            await bus.publish(queue, {"n": n}, key="r")
    consumer = bus.consumer(queues, group="g", name="c", max_in_flight=4)
    taken = [await consumer.get(2.0) for _ in range(4)]
    assert all(d is not None for d in taken)
    assert await consumer.get(0.15) is None, "a fifth message while four are held"
    ready = [(await _broker_view(bus, q))[0] for q in queues]
    assert sum(ready) == 12 - 4, ready
    first = taken[0]
    assert first is not None
    await consumer.ack(first)
    assert await consumer.get(2.0) is not None
    assert consumer.in_flight == 4
    assert await consumer.get(0.15) is None
    ready = [(await _broker_view(bus, q))[0] for q in queues]
    assert sum(ready) == 12 - 5, ready
    await consumer.close()


async def test_pushed_messages_not_taken_go_back_uncounted_on_close(bus: RabbitBus) -> None:
    """A consumer of one queue is pushed up to max_in_flight; on close, what it was pushed
    and never handed out goes to another consumer with no delivery counted."""
    for n in range(2):
        await bus.publish("q", {"n": n}, key="r")
    leaving = bus.consumer(["q"], group="g", name="leaving", max_in_flight=2)
    first = await leaving.get(2.0)
    assert first is not None
    assert first.body == {"n": 0}
    for _ in range(200):  # the second is pushed to it, not yet taken
        if (await _broker_view(bus, "q"))[0] == 0:
            break
    assert (await _broker_view(bus, "q"))[0] == 0
    await leaving.close()
    other = bus.consumer(["q"], group="g", name="other", max_in_flight=2)
    second = await other.get(2.0)
    assert second is not None
    assert (second.body, second.deliveries) == ({"n": 1}, 1)
    await other.ack(second)
    again = await other.get(POLICY.visibility * 4)  # the held one, after its timeout
    assert again is not None
    assert (again.id, again.deliveries) == (first.id, 2)
    await other.ack(again)
    await other.close()


async def test_a_consumer_that_stops_asking_hands_what_it_was_pushed_on(bus: RabbitBus) -> None:
    """A message pushed to a consumer that no longer calls get (nor closes) reaches a
    consumer that asks, within the visibility timeout, with no delivery counted."""
    quiet = bus.consumer(["q"], group="g", name="quiet")
    assert await quiet.get(0.05) is None  # subscribed, then it never asks again
    asking = bus.consumer(["q"], group="g", name="asking")
    await bus.publish("q", {"n": 1}, key="r")
    got = await asking.get(POLICY.visibility * 4)
    assert got is not None
    assert (got.body, got.deliveries) == ({"n": 1}, 1)
    await asking.ack(got)
    await asking.close()
    await quiet.close()


async def test_a_subscription_the_broker_cancels_is_made_again(bus: RabbitBus) -> None:
    """A queue deleted under a subscribed consumer (the broker cancels the subscription) is
    declared again by the consumer and consumed again."""
    consumer = bus.consumer(["a", "b"], group="g", name="c", max_in_flight=2)
    assert await consumer.get(0.05) is None  # subscribed to both
    await bus.delete("a")
    for _ in range(10):  # it sees the cancel, declares "a" again and subscribes to it
        assert await consumer.get(0.05) is None
    await bus.publish("a", {"n": 1}, key="r")
    got = await consumer.get(2.0)
    assert got is not None, "the queue is never consumed again"
    assert (got.queue, got.body) == ("a", {"n": 1})
    await consumer.ack(got)
    await consumer.close()


async def test_reply_queues_are_kept_in_memory_and_expire_when_unused(bus: RabbitBus) -> None:
    """An orchestrator's reply queue carries notices that may be lost: a classic queue that
    is not durable and that the broker deletes when long unused, holding transient messages.
    Task queues stay durable quorum queues with persistent messages."""
    reply_queue, task_queue = f"{REPLY_PREFIX}o1", "flow.a"
    await bus.publish(reply_queue, {"kind": "committed"}, key="r")
    await bus.publish(task_queue, {"n": 1}, key="r")
    async with await bus.channel() as channel:
        # The broker accepts a declaration only if it matches the queue as it is.
        replies = await channel.declare_queue(
            bus.queue_name(reply_queue),
            durable=False,
            arguments={"x-queue-type": "classic", "x-expires": 600_000},
        )
        reply = await replies.get(no_ack=True)
        tasks = await channel.declare_queue(bus.queue_name(task_queue), passive=True)
        task = await tasks.get(no_ack=True)
    assert reply.delivery_mode == aio_pika.DeliveryMode.NOT_PERSISTENT
    assert task.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    async with await bus.channel() as channel:
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await channel.declare_queue(
                bus.queue_name(reply_queue), durable=True, arguments={"x-queue-type": "quorum"}
            )
