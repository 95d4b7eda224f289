"""The consumer of `firebreak.bus.rabbitmq` (`RabbitConsumer`), and what both sides share.

How it takes messages, and why, is in the docstring of `firebreak.bus.rabbitmq`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import aio_pika
import aiormq.abc
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from firebreak.bus.base import ConsumerBase, Delivery

if TYPE_CHECKING:
    from firebreak.bus.rabbitmq import RabbitBus

log = logging.getLogger("firebreak.bus.rabbitmq")

_TRANSIENT: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,  # ConnectionError, TimeoutError
)
"""What a lost connection or channel raises; the operation may work again later."""
_POLL_MIN = 0.001
_POLL_MAX = 0.2
_CLOSE_TIMEOUT = 5.0  # closing a channel or connection the broker no longer answers
_KEY = "fb-key"
_PRIOR = "fb-n"
_REASON = "fb-reason"


def _body_of(raw: bytes) -> dict[str, Any] | None:
    try:
        body = json.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _cancelled(task: asyncio.Task[Any] | None, base: int) -> None:
    """Raise if `task` was asked to cancel and a library swallowed the request.

    Python 3.11's ``asyncio.wait_for`` (used inside aiormq) does, when the awaited reply
    arrives at the same moment as the cancellation.
    """
    if task is not None and task.cancelling() > base:
        raise asyncio.CancelledError


async def _close(closable: AbstractChannel | AbstractConnection) -> None:
    """Close it, if the broker still answers."""
    if not closable.is_closed:
        with contextlib.suppress(*_TRANSIENT):  # TimeoutError included
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await closable.close()


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


@dataclass(slots=True, eq=False)
class _Push:
    """A ``basic.consume`` of one queue, with a prefetch of its own."""

    queue: str
    prefetch: int
    tag: str = ""
    unacked: int = 0  # delivered through it and not yet settled (buffered or handed out)


@dataclass(slots=True, eq=False)
class _Held:
    delivery: Delivery
    message: AbstractIncomingMessage | None  # None: no longer ours at the broker
    raw: bytes
    deadline: float
    via: _Push | None


class RabbitConsumer(ConsumerBase["RabbitBus"]):
    """A consumer of one or more queues of a `RabbitBus`; see the module docstring."""

    def __init__(
        self, bus: RabbitBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        super().__init__(bus, queues, group=group, name=name, limit=limit)
        self._held: dict[tuple[str, str], _Held] = {}
        # Pushed, not yet handed out: (its subscription, the message, when it goes back).
        self._inbox: deque[tuple[_Push, AbstractIncomingMessage, float]] = deque()
        self._pushes: dict[str, _Push] = {}  # by queue
        self._push = len(queues) <= limit  # a slot for every queue: push, else poll only
        self._getting = 0  # basic.get calls under way
        self._channel: AbstractChannel | None = None
        self._qos = 0  # the channel's prefetch for its next basic.consume
        self._amqp: dict[str, AbstractQueue] = {}
        self._next = 0  # round robin over queues
        # The poll interval, kept across `get` calls: back to _POLL_MIN when a message came,
        # doubling up to _POLL_MAX while none does. A busy consumer looks again within
        # milliseconds; an idle one costs the broker five gets a second.
        self._pause = _POLL_MIN
        self._wake = asyncio.Event()  # a push, a settle, a local publish, a lost channel
        self.polling = False
        """It looks with ``basic.get`` now and then: a publish in this process wakes it."""
        self._timer: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitConsumer(name={self.name!r}, queues={self.queues!r})"

    @property
    def in_flight(self) -> int:
        """Messages handed out and not yet settled."""
        return len(self._held)

    def _room(self) -> int:
        """Messages it may still take, counting all its subscriptions may still be pushed."""
        pushable = sum(p.prefetch - p.unacked for p in self._pushes.values())
        return self.limit - len(self._held) - len(self._inbox) - self._getting - pushable

    async def _queues(self) -> dict[str, AbstractQueue]:
        channel = self._channel
        if channel is None or channel.is_closed:
            self._drop_channel()
            for queue in self.queues:
                await self.bus.declare(queue)
            channel = await self.bus.channel()
            channel.close_callbacks.add(self._lost)
            self._channel, self._qos = channel, 0
            self._amqp = {
                q: await channel.get_queue(self.bus.queue_name(q), ensure=False)
                for q in self.queues
            }
        return self._amqp

    def _lost(self, channel: object, *_: object) -> None:
        if channel is self._channel:  # not one we closed
            self._drop_channel()
        self._wake.set()

    def _drop_channel(self) -> None:
        """The channel is gone: the broker has requeued what it held, pushed ones too."""
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:  # else pushes strand on it
            self._closing = asyncio.ensure_future(_close(channel))
        self._amqp = {}
        self._pushes.clear()
        self._inbox.clear()
        for held in self._held.values():
            held.message = None

    async def get(self, wait: float) -> Delivery | None:
        """The next message of any of the queues, or ``None`` after `wait` seconds."""
        end = time.monotonic() + wait
        task = asyncio.current_task()
        base = task.cancelling() if task is not None else 0
        while not self._closed:
            _cancelled(task, base)
            if self._inbox:
                push, message, _ = self._inbox.popleft()
                self._pause = _POLL_MIN
                return await self._accept(push.queue, message, push)
            self._wake.clear()  # before looking: anything after it wakes us
            try:
                delivery, poll = await self._look()
            except _TRANSIENT as exc:
                log.warning("consumer %s: broker unreachable, waiting: %s", self.name, exc)
                self._drop_channel()
                delivery, poll, self._pause = None, True, _POLL_MAX * 2
            self.polling = poll
            _cancelled(task, base)  # what it took stays held: back after the timeout
            if delivery is not None:
                self._pause = _POLL_MIN
                return delivery
            left = end - time.monotonic()
            if self._inbox:
                continue
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._pause, left) if poll else left):
                    await self._wake.wait()
                    self._pause = _POLL_MIN / 2
            if poll:
                self._pause = min(self._pause * 2, _POLL_MAX)
        return None

    async def _look(self) -> tuple[Delivery | None, bool]:
        """Subscribe where there is room, then get from the queues no push can serve now.

        Returns the delivery, and whether to look again after the poll pause.
        """
        amqp = await self._queues()
        if self._push:
            # Forget a subscription the broker cancelled (its queue was deleted): aiormq
            # drops it from its channel's consumers.
            underlay = None if self._channel is None else await self._channel.get_underlay_channel()
            live = getattr(underlay, "consumers", None)
            for queue, push in list(self._pushes.items()):
                if live is not None and push.tag and push.tag not in live:
                    del self._pushes[queue]
            for queue in self.queues:
                if queue not in self._pushes and (room := self._room()) > 0:
                    await asyncio.shield(self._subscribe(queue, room))
        room = self._room()
        todo = [
            q for q in self.queues if (p := self._pushes.get(q)) is None or p.unacked >= p.prefetch
        ]
        if not todo or room <= 0:
            return None, False  # a push, a settle or a lost channel wakes us
        count = len(todo)
        for i in range(count):
            queue = todo[(self._next + i) % count]
            # No timeout: on Python 3.11 `asyncio.wait_for` can swallow a cancellation
            # that lands as the reply arrives (a dead broker is noticed by heartbeats).
            self._getting += 1
            try:
                message = await amqp[queue].get(no_ack=False, fail=False, timeout=None)
            finally:
                self._getting -= 1
            if message is not None:
                self._next = (self._next + i + 1) % count
                return await self._accept(queue, message, None), True
            if self._inbox:
                break
        return None, True

    async def _subscribe(self, queue: str, room: int) -> None:
        """``basic.consume`` `queue`: a lone queue with all the room, else with one slot."""
        channel = self._channel
        if channel is None:  # pragma: no cover - _queues sets it
            return
        push = _Push(queue, min(room, 65535) if len(self.queues) == 1 else 1)  # a short
        self._pushes[queue] = push  # counted first: a call failing half way may yet push
        if push.prefetch != self._qos:
            await channel.set_qos(prefetch_count=push.prefetch)
            self._qos = push.prefetch

        async def pushed(raw: aiormq.abc.DeliveredMessage) -> None:
            # Called by aiormq in the order of the frames (aio-pika's `consume` adds a task
            # hop, which could put a push after the `basic.cancel-ok` that follows it).
            if self._channel is not channel:
                return  # an old channel's: the broker requeues it with that channel
            push.unacked += 1
            message = aio_pika.IncomingMessage(raw, no_ack=False)
            self._inbox.append((push, message, time.monotonic() + self.bus.policy.visibility))
            self._wake.set()
            self._watch()

        underlay = await channel.get_underlay_channel()
        ok = await underlay.basic_consume(self.bus.queue_name(queue), pushed, no_ack=False)
        push.tag = ok.consumer_tag or ""

    async def _unsubscribe_if_full(self, queue: str) -> None:
        """Cancel it, so that what we hand back goes to another consumer, if it is full.

        Only then may the broker push nothing more on it: RabbitMQ 3.x returns a push that
        crosses the cancel, counted.
        """
        push = self._pushes.get(queue)
        if push is not None and push.unacked >= push.prefetch:
            await self._unsubscribe(queue)

    async def _unsubscribe(self, queue: str) -> None:
        """``basic.cancel`` it: the broker pushes no more on it (what it holds stays)."""
        push, channel = self._pushes.get(queue), self._channel
        if push is None or channel is None or not push.tag:
            return
        with contextlib.suppress(*_TRANSIENT):
            underlay = await channel.get_underlay_channel()
            await underlay.basic_cancel(push.tag, timeout=_CLOSE_TIMEOUT)
        if self._pushes.get(queue) is push:
            del self._pushes[queue]
            self._wake.set()  # a waiting `get` subscribes again

    async def _accept(
        self, queue: str, message: AbstractIncomingMessage, via: _Push | None
    ) -> Delivery:
        headers = message.headers or {}
        policy = self.bus.policy
        message_id = message.message_id or f"tag-{message.delivery_tag}"
        key = _text(headers.get(_KEY, ""))
        deliveries = _int(headers.get(_PRIOR)) + _int(headers.get("x-delivery-count")) + 1
        body = _body_of(message.body)
        delivery = Delivery(
            queue=queue, id=message_id, key=key, body=body or {}, deliveries=deliveries
        )
        held = _Held(delivery, message, message.body, time.monotonic() + policy.visibility, via)
        reason = ""
        if deliveries > policy.max_deliveries:
            reason = f"delivered {deliveries} times (max {policy.max_deliveries})"
        elif body is None:
            reason = "unreadable body"
        if reason:
            await self._kill(held, reason)
            return replace(delivery, dead=True, reason=reason)
        self._held[(queue, message_id)] = held
        self._watch()
        return delivery

    def _let_go(self, held: _Held) -> AbstractIncomingMessage | None:
        """Its message (``None`` if no longer ours), now no longer counted as held by us."""
        message, held.message = held.message, None
        if message is not None and held.via is not None:
            held.via.unacked -= 1
        self._wake.set()
        return message

    async def _move(self, held: _Held, publish: Callable[[], Awaitable[None]]) -> None:
        """Publish its copy (with a confirm), then ack it; if it is still ours."""
        message = self._let_go(held)
        if message is None:
            return
        try:
            await publish()
        except BaseException:
            with contextlib.suppress(*_TRANSIENT):
                await message.nack(requeue=True)  # back, if counted
            raise
        with contextlib.suppress(*_TRANSIENT):  # a failed ack: a duplicate, never a loss
            await message.ack()

    async def _kill(self, held: _Held, reason: str) -> None:
        d = held.delivery
        await self._move(
            held,
            lambda: self.bus.send(
                d.queue, held.raw, message_id=d.id, key=d.key, prior=d.deliveries, reason=reason
            ),
        )

    async def _republish(self, held: _Held, prior: int) -> None:
        d = held.delivery
        await self._move(
            held,
            lambda: self.bus.send(d.queue, held.raw, message_id=d.id, key=d.key, prior=prior),
        )
        self.bus._notify()  # noqa: SLF001 - our own bus

    # -- visibility timeout ------------------------------------------------------------

    def _watch(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        """Return (counted) what is held past its visibility timeout; hand back what no get took.

        What was pushed and not taken within the timeout is republished (not counted).
        """
        task = asyncio.current_task()
        while True:
            _cancelled(task, 0)
            live = [h for h in self._held.values() if h.message is not None]
            if not live and not self._inbox:
                self._timer = None
                if self._closed:
                    await self._close_channel()
                return
            now = time.monotonic()
            if self._inbox and self._inbox[0][2] <= now:
                # Nobody asks: stop the pushes, so that what goes back goes to another.
                await self._stop_pushes()
            for held in live:
                if held.deadline <= now and held.message is not None:
                    log.info("task %s held past its visibility timeout", held.delivery.id)
                    await self._unsubscribe_if_full(held.delivery.queue)
                    message = self._let_go(held)
                    with contextlib.suppress(*_TRANSIENT):
                        if message is not None:
                            await message.reject(requeue=True)
            deadlines = [h.deadline for h in live if h.message is not None]
            deadlines += [due for *_, due in self._inbox]
            soonest = min(deadlines, default=now)
            await asyncio.sleep(max(soonest - time.monotonic(), 0.005))

    async def _hand_back(self) -> None:
        """Give back what was pushed and not taken (republished, so not counted)."""
        while self._inbox:
            push, message, _ = self._inbox.popleft()
            headers = message.headers or {}
            prior = _int(headers.get(_PRIOR)) + _int(headers.get("x-delivery-count"))
            key = _text(headers.get(_KEY, ""))
            delivery = Delivery(queue=push.queue, id=message.message_id or "", key=key)
            await self._republish(_Held(delivery, message, message.body, 0.0, push), prior)

    # -- settling ------------------------------------------------------------------------

    async def ack(self, delivery: Delivery) -> None:
        """Ack it, if it is still ours (else it is back in the queue: a no-op)."""
        held = self._held.pop((delivery.queue, delivery.id), None)
        message = None if held is None else self._let_go(held)
        if message is not None:
            try:
                await message.ack()
            except _TRANSIENT as exc:  # the channel died: the broker redelivers it
                log.warning("could not ack %s (it will be redelivered): %s", delivery.id, exc)

    async def release(self, delivery: Delivery) -> None:
        """Republish it with its count so far, then ack this delivery: not counted."""
        held = self._held.pop((delivery.queue, delivery.id), None)
        if held is None:
            return
        if held.message is not None:
            await self._unsubscribe_if_full(delivery.queue)
        await self._republish(held, max(delivery.deliveries - 1, 0))

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Move it to the dead letters now, if it is still ours."""
        held = self._held.pop((delivery.queue, delivery.id), None)
        if held is not None:
            await self._kill(held, reason)

    async def touch(self, delivery: Delivery) -> None:
        """Restart its visibility timeout, if it is still ours."""
        held = self._held.get((delivery.queue, delivery.id))
        if held is not None and held.message is not None:
            held.deadline = time.monotonic() + self.bus.policy.visibility

    async def close(self) -> None:
        """Stop; what is still held is returned when its visibility timeout passes.

        Pushed messages not yet taken go back at once, republished (not counted).
        """
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        await self._stop_pushes()
        if any(h.message is not None for h in self._held.values()):
            self._watch()
        elif self._timer is None or self._timer.done():
            await self._close_channel()

    async def _stop_pushes(self) -> None:
        for queue in list(self._pushes):
            await self._unsubscribe(queue)
        with contextlib.suppress(*_TRANSIENT):
            await self._hand_back()

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        self._amqp = {}
        if channel is not None:
            await _close(channel)
        if self._closed:
            self.bus._consumers.discard(self)  # noqa: SLF001 - our own bus

    async def shutdown(self) -> None:
        """Stop now, closing the channel (the broker returns what it held); for the bus."""
        if not self._closed:
            self._closed = True
            await self._stop_pushes()
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._held.clear()
        await self._close_channel()
