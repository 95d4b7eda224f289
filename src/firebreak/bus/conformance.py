# ruff: noqa: S101, PT018 -- the checks are assertions
"""The bus conformance suite: what every `TaskBus` backend must do, run against each.

Use it for a backend of your own the way firebreak's tests use it for theirs::

    @pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
    async def test_my_bus(check):
        await check(my_factory)

A factory takes a `BusPolicy` and returns an async context manager yielding a set-up bus;
each check uses its own queue names and deletes them at the end. The checks use short
visibility timeouts (a fraction of a second) and real time; a factory whose backend is
slow to join consumers may carry a ``time_scale`` (see `_timing`).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import TypeAlias

from firebreak.bus.base import BusPolicy, Delivery, TaskBus

__all__ = ["CHECKS", "VISIBILITY", "BusFactory", "Check"]

BusFactory: TypeAlias = Callable[[BusPolicy], AbstractAsyncContextManager[TaskBus]]
"""Makes a set-up bus with the given policy (and cleans up after it)."""
Check: TypeAlias = Callable[[BusFactory], Awaitable[None]]

VISIBILITY = 0.3
"""The visibility timeout the checks run with, seconds."""
_QUIET = 0.15  # how long "nothing arrives" is watched for


def _queue() -> str:
    return f"conf-{uuid.uuid4().hex[:10]}"


def _timing(make: BusFactory, check: str) -> tuple[float, float, BusPolicy]:
    """Visibility timeout, quiet period and policy for a backend, in `check`.

    A factory may carry a ``time_scale`` attribute: a backend whose consumers need longer
    to join (a Kafka group join takes one to two seconds) runs the checks on a longer
    clock, with the same proportions, instead of the checks being loosened. It is a
    number for every check, or a mapping from check names to numbers, ``"*"`` for the
    rest: a join costs some checks more of their clock than others.
    """
    scale = getattr(make, "time_scale", 1.0)
    if isinstance(scale, Mapping):
        unknown = set(scale) - {c.__name__ for c in CHECKS} - {"*"}
        if unknown:
            raise ValueError(f"time_scale names no such check: {', '.join(sorted(unknown))}")
        scale = scale.get(check, scale.get("*", 1.0))
    visibility, quiet = VISIBILITY * float(scale), _QUIET * float(scale)
    return visibility, quiet, BusPolicy(visibility_timeout=visibility, max_deliveries=3)


async def _drain(
    consumer_get: Callable[[float], Awaitable[Delivery | None]], quiet: float
) -> list[Delivery]:
    out = []
    while (delivery := await consumer_get(quiet)) is not None:
        out.append(delivery)
    return out


async def order_per_key(make: BusFactory) -> None:
    """One consumer receives a queue's messages in publish order, so per run (key) too."""
    _visibility, quiet, policy = _timing(make, "order_per_key")
    async with make(policy) as bus:
        queue = _queue()
        try:
            sent = [(f"run-{i % 3}", i) for i in range(30)]
            for key, n in sent:
                await bus.publish(queue, {"n": n}, key=key)
            consumer = bus.consumer([queue], group="g", name="c1", max_in_flight=100)
            got = await _drain(consumer.get, quiet)
            assert [(d.key, d.body["n"]) for d in got] == sent, got
            for delivery in got:
                assert delivery.deliveries == 1
                await consumer.ack(delivery)
            await consumer.close()
        finally:
            await bus.delete(queue)


async def at_least_once(make: BusFactory) -> None:
    """Competing consumers together receive every message once when all ack; none after."""
    visibility, quiet, policy = _timing(make, "at_least_once")
    async with make(policy) as bus:
        queue = _queue()
        try:
            consumers = [
                bus.consumer([queue], group="g", name=f"c{i}", max_in_flight=4) for i in range(3)
            ]
            for i in range(60):
                await bus.publish(queue, {"n": i}, key=f"run-{i}")

            async def work(index: int) -> list[int]:
                consumer = consumers[index]
                seen = []
                while (delivery := await consumer.get(quiet * 2)) is not None:
                    seen.append(delivery.body["n"])
                    await consumer.ack(delivery)
                return seen

            seen = await asyncio.gather(*(work(i) for i in range(3)))
            flat = sorted(n for part in seen for n in part)
            assert flat == list(range(60)), flat
            await asyncio.sleep(visibility * 1.5)
            assert await consumers[0].get(quiet) is None, "an acked message came back"
            for consumer in consumers:
                await consumer.close()
        finally:
            await bus.delete(queue)


async def redelivery_after_death(make: BusFactory) -> None:
    """What a consumer held without acking goes to another after the visibility timeout."""
    visibility, _quiet, policy = _timing(make, "redelivery_after_death")
    async with make(policy) as bus:
        queue = _queue()
        try:
            await bus.publish(queue, {"task": "x"}, key="run-1")
            dying = bus.consumer([queue], group="g", name="dying")
            first = await dying.get(1.0)
            assert first is not None and first.deliveries == 1
            survivor = bus.consumer([queue], group="g", name="survivor")
            assert await survivor.get(visibility / 3) is None, "redelivered before its timeout"
            again = await survivor.get(visibility * 4)
            assert again is not None, "not redelivered"
            assert (again.id, again.body, again.deliveries) == (first.id, first.body, 2)
            await survivor.ack(again)
            assert await survivor.get(visibility * 1.5) is None
            await survivor.close()
            await dying.close()
        finally:
            await bus.delete(queue)


async def touch_keeps_it(make: BusFactory) -> None:
    """A consumer still working touches its message; nobody else gets it meanwhile."""
    visibility, _quiet, policy = _timing(make, "touch_keeps_it")
    async with make(policy) as bus:
        queue = _queue()
        try:
            await bus.publish(queue, {"task": "slow"}, key="run-1")
            worker = bus.consumer([queue], group="g", name="slow")
            held = await worker.get(1.0)
            assert held is not None
            other = bus.consumer([queue], group="g", name="other")
            for _ in range(5):
                await worker.touch(held)
                assert await other.get(visibility / 2) is None, "taken while being touched"
            await worker.ack(held)
            await worker.close()
            await other.close()
        finally:
            await bus.delete(queue)


async def release_hands_back(make: BusFactory) -> None:
    """A released message goes to another consumer soon, and the delivery is not counted."""
    visibility, _quiet, policy = _timing(make, "release_hands_back")
    async with make(policy) as bus:
        queue = _queue()
        try:
            await bus.publish(queue, {"task": "x"}, key="run-1")
            leaving = bus.consumer([queue], group="g", name="leaving")
            held = await leaving.get(1.0)
            assert held is not None
            await leaving.release(held)
            assert leaving.in_flight == 0
            await leaving.close()
            other = bus.consumer([queue], group="g", name="other")
            again = await other.get(visibility * 4)
            assert again is not None and again.id == held.id
            assert again.deliveries == 1, again.deliveries
            await other.ack(again)
            await other.close()
        finally:
            await bus.delete(queue)


async def poison_to_dead_letters(make: BusFactory) -> None:
    """A message delivered max_deliveries times without an ack ends in the dead letters."""
    visibility, _quiet, policy = _timing(make, "poison_to_dead_letters")
    async with make(policy) as bus:
        queue = _queue()
        try:
            await bus.publish(queue, {"task": "poison"}, key="run-p")
            await bus.publish(queue, {"task": "fine"}, key="run-f")
            fine_seen = False
            dead: Delivery | None = None
            for attempt in range(policy.max_deliveries + 2):
                consumer = bus.consumer([queue], group="g", name=f"victim-{attempt}")
                while True:
                    delivery = await consumer.get(visibility * 4)
                    assert delivery is not None, "the poison message vanished"
                    if delivery.body["task"] == "fine":
                        fine_seen = True
                        await consumer.ack(delivery)
                        continue
                    break
                await consumer.close()  # dies holding the poison message
                if delivery.dead:
                    dead = delivery
                    break
                assert delivery.deliveries == attempt + 1
            assert fine_seen, "a good message was held up behind the poison one"
            assert dead is not None, "never dead-lettered"
            assert dead.deliveries == policy.max_deliveries + 1
            assert dead.body == {"task": "poison"} and dead.key == "run-p"
            letters = await bus.dead_letters(queue)
            assert [(d.id, d.body) for d in letters] == [(dead.id, dead.body)]
            assert letters[0].reason
            last = bus.consumer([queue], group="g", name="after")
            assert await last.get(visibility * 2) is None, "delivered after dead-lettering"
            await last.close()
        finally:
            await bus.delete(queue)


async def reject_dead_letters(make: BusFactory) -> None:
    """`reject` moves a message to the dead letters at once, with its reason."""
    visibility, _quiet, policy = _timing(make, "reject_dead_letters")
    async with make(policy) as bus:
        queue = _queue()
        try:
            await bus.publish(queue, {"task": "bad"}, key="run-1")
            consumer = bus.consumer([queue], group="g", name="c")
            held = await consumer.get(1.0)
            assert held is not None
            await consumer.reject(held, "no such agent")
            assert consumer.in_flight == 0
            letters = await bus.dead_letters(queue)
            assert [(d.body, d.reason) for d in letters] == [({"task": "bad"}, "no such agent")]
            assert await consumer.get(visibility * 2) is None
            await consumer.close()
        finally:
            await bus.delete(queue)


async def backpressure(make: BusFactory) -> None:
    """A consumer never holds more than max_in_flight unacked messages."""
    _visibility, quiet, policy = _timing(make, "backpressure")
    async with make(policy) as bus:
        queue = _queue()
        try:
            for i in range(5):
                await bus.publish(queue, {"n": i}, key=f"run-{i}")
            consumer = bus.consumer([queue], group="g", name="c", max_in_flight=2)
            a = await consumer.get(1.0)
            b = await consumer.get(1.0)
            assert a is not None and b is not None
            assert consumer.in_flight == 2
            assert await consumer.get(quiet) is None, "a third message while two are held"
            await consumer.ack(a)
            c = await consumer.get(1.0)
            assert c is not None and consumer.in_flight == 2
            waiter = asyncio.ensure_future(consumer.get(2.0))
            await asyncio.sleep(quiet / 2)
            assert not waiter.done()
            await consumer.ack(b)
            d = await waiter
            assert d is not None
            assert [x.body["n"] for x in (a, b, c, d)] == [0, 1, 2, 3]
            for x in (c, d):
                await consumer.ack(x)
            await consumer.close()
        finally:
            await bus.delete(queue)


async def several_queues(make: BusFactory) -> None:
    """One consumer reads several queues (a worker serving several agents)."""
    _visibility, quiet, policy = _timing(make, "several_queues")
    async with make(policy) as bus:
        queues = [_queue(), _queue()]
        try:
            await bus.publish(queues[0], {"q": 0}, key="r")
            await bus.publish(queues[1], {"q": 1}, key="r")
            consumer = bus.consumer(queues, group="g", name="c", max_in_flight=10)
            got = await _drain(consumer.get, quiet)
            assert sorted((d.queue, d.body["q"]) for d in got) == sorted(
                [(queues[0], 0), (queues[1], 1)]
            )
            for delivery in got:
                await consumer.ack(delivery)
            await consumer.close()
        finally:
            for queue in queues:
                await bus.delete(queue)


CHECKS: tuple[Check, ...] = (
    order_per_key,
    at_least_once,
    redelivery_after_death,
    touch_keeps_it,
    release_hands_back,
    poison_to_dead_letters,
    reject_dead_letters,
    backpressure,
    several_queues,
)
"""Every check, in a stable order."""
