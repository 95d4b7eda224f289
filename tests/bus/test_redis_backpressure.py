"""A Redis consumer of several queues never holds more than its ``max_in_flight`` (real Redis).

``XREADGROUP``'s COUNT is per stream, so one read of several streams can bring more than
the consumer has room for; the rest must go back to the group, not be handed out.
"""

from __future__ import annotations

from typing import Any

import pytest

from firebreak.bus.redis import RedisBus


@pytest.fixture
def bus(redis_bus: RedisBus) -> RedisBus:
    """The test Redis bus of conftest (keys removed afterwards)."""
    return redis_bus


async def test_one_read_of_several_queues_hands_out_no_more_than_max_in_flight(
    bus: RedisBus,
) -> None:
    """Two messages in each of three queues, room for two: two are held, the other four go
    back to the group and come, each once, as the held ones are acked."""
    queues = ["a", "b", "c"]
    consumer = bus.consumer(queues, group="g", name="c", max_in_flight=2)
    assert await consumer.get(0.05) is None  # the groups exist before the publishes
    for queue in queues:
        for n in range(2):
            await bus.publish(queue, {"q": queue, "n": n}, key=queue)
    first = [await consumer.get(1.0), await consumer.get(1.0)]
    assert all(d is not None for d in first)
    assert consumer.in_flight == 2
    assert await consumer.get(0.2) is None, "a third message while two are held"
    seen = [d for d in first if d is not None]
    pending = list(seen)
    while pending:
        await consumer.ack(pending.pop())
        while consumer.in_flight < 2 and (delivery := await consumer.get(0.3)) is not None:
            assert delivery.deliveries == 1  # handed back, not counted as a failed delivery
            seen.append(delivery)
            pending.append(delivery)
        assert consumer.in_flight <= 2
    assert sorted((d.body["q"], d.body["n"]) for d in seen) == [
        (q, n) for q in queues for n in range(2)
    ]
    await consumer.close()


async def test_after_a_read_that_overflowed_reads_take_only_the_room_from_the_queues_in_turn(
    bus: RedisBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Five messages in each of three queues, room for two: the first read hands four
    back; the next reads take no more than the room (nothing more goes back), from each
    queue in turn, until the backlog is gone; every message comes once."""
    released: list[str] = []
    claim_own = RedisBus.claim_own

    async def spy(self: RedisBus, queue: str, group: str, name: str, args: Any) -> int:
        if args[1] == "release":
            released.append(args[0])
        return await claim_own(self, queue, group, name, args)

    monkeypatch.setattr(RedisBus, "claim_own", spy)
    queues = ["a", "b", "c"]
    consumer = bus.consumer(queues, group="g", name="c", max_in_flight=2)
    assert await consumer.get(0.05) is None  # the groups exist before the publishes
    for queue in queues:
        for n in range(5):
            await bus.publish(queue, {"q": queue, "n": n}, key=queue)
    seen = []
    while (delivery := await consumer.get(0.3)) is not None:
        assert consumer.in_flight <= 2
        assert delivery.deliveries == 1
        seen.append(delivery)
        await consumer.ack(delivery)
    assert len(released) == 4  # the first read's overflow only
    assert sorted((d.body["q"], d.body["n"]) for d in seen) == [
        (q, n) for q in queues for n in range(5)
    ]
    assert {d.body["q"] for d in seen[6:12]} == set(queues)  # in turn, not one drained first
    await consumer.close()
