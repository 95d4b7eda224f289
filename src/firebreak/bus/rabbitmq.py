"""`RabbitBus`: a `TaskBus` on RabbitMQ via aio-pika (``amqp://``, extra ``rabbitmq``).

Layout, under a prefix (default ``firebreak``):

- ``<prefix>:q:<queue>``: the queue's messages, a durable **quorum queue** (it counts the
  deliveries of a message in ``x-delivery-count``: a nack with requeue and a consumer
  whose channel closes both count, as a worker that dies does);
- ``<prefix>:dead:<queue>``: its dead letters, a durable classic queue bound to the
  dead-letter exchange ``<prefix>:dlx`` (direct), which the work queue also names as its
  ``x-dead-letter-exchange``.

Messages are persistent and published with publisher confirms (``publish`` returns once
the broker has them), acks are manual.

How the protocol maps to RabbitMQ:

- **taking a message** is a ``basic.get`` (pull), only while the consumer holds fewer than
  ``max_in_flight`` messages: the backpressure is exact over any number of queues, and a
  message is never buffered by a consumer that is not working on it (a ``basic.consume``
  prefetch is per queue on quorum queues, so a worker over 4 queues would hold up to 4x
  its limit, and what it buffered would be counted as delivered when it dies). An empty
  ``get`` polls again after 1 ms, doubling up to 200 ms while nothing comes (the interval is
  the consumer's, kept across ``get`` calls, and back to 1 ms after each message); a
  publish in the same process wakes it at once.
- **delivery count** = ``fb-n`` (deliveries carried over by a release, see below) +
  ``x-delivery-count`` + 1. A delivery past ``max_deliveries`` is moved to the dead letters
  (publish with confirm, then ack) and handed out once with ``dead=True``, as on Redis.
  The queue's ``x-delivery-limit`` is ``max_deliveries``: should the consumer holding that
  last, dead delivery die before moving it, the broker dead-letters it through the
  exchange itself (its reason then reads ``broker: delivery_limit``).
- **visibility timeout** is enforced by the consumer holding the message: a message not
  acked, released, rejected or touched within it is nacked with requeue (counted) and goes
  to the next consumer that asks. A consumer whose process dies, or whose connection
  drops, loses its messages at once (the broker requeues them, counted): that is sooner
  than the visibility timeout, never later. A process that is alive but frozen (a blocked
  event loop) cannot nack: its messages stay held until its connection dies (heartbeat,
  60 s by default, ``?heartbeat=N``) or the broker's ``consumer_timeout`` (server-wide,
  30 min by default) closes its channel.
- **touch** restarts that timer; it costs no round trip.
- **release** republishes the message (same id and key, ``fb-n`` = its deliveries minus
  this one) with a confirm, then acks the original: it is not counted, and another
  consumer can take it at once, but it goes to the back of the queue (Redis hands a
  released message out before new ones).
- **close** stops taking messages; what the consumer still holds is nacked when its
  visibility timeout passes (as if it had died), then the channel closes.
  ``RabbitBus.close`` closes the connection, which returns what is still held at once.
- **groups**: a queue is one RabbitMQ queue shared by all its consumers, so all consumers
  of a queue compete whatever their ``group`` (Redis gives each group its own copy; firebreak
  uses one group per queue).

A settle (ack, release, reject, touch) of a message that is no longer this consumer's
(its visibility timeout passed, or its channel died) does nothing: the message is back
in the queue, and its next delivery is a duplicate the worker recognises. Connection
losses are survived: the bus reconnects on its next operation; ``get`` waits through an
outage (returning ``None`` when `wait` passes), ``publish`` retries for up to
``publish_retry`` seconds (default 30) before raising.

URL: ``amqp[s]://[user:pass@]host[:port][/vhost][?prefix=..&visibility_timeout=..&
max_deliveries=..&publish_retry=..]``; other query options (``heartbeat``, ...) go to
aio-pika unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from firebreak._lifecycle import SetupClose
from firebreak.bus.base import BusPolicy, Delivery, check_consumer

__all__ = ["RabbitBus", "RabbitConsumer", "from_url"]

log = logging.getLogger(__name__)

_OPTIONS = frozenset({"prefix", "visibility_timeout", "max_deliveries", "publish_retry"})
_TRANSIENT: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPError,
    aiormq.exceptions.ChannelInvalidStateError,
    OSError,  # ConnectionError, TimeoutError
)
"""What a lost connection or channel raises; the operation may work again later."""
_POLL_MIN = 0.001
_POLL_MAX = 0.2
_RECONNECT_PAUSE = 0.5
_CLOSE_TIMEOUT = 5.0  # closing a channel or connection the broker no longer answers
_OP_TIMEOUT = 30.0  # one broker round trip (declare, delete, connect)
_KEY = "fb-key"
_PRIOR = "fb-n"
_REASON = "fb-reason"


def from_url(url: str, *, policy: BusPolicy | None = None) -> RabbitBus:
    """Build (not connect) a bus from an ``amqp://`` URL; see the module docstring."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(key, value) if key in _OPTIONS else theirs.append((key, value)))
    rest = urlunsplit(parts._replace(query=urlencode(theirs)))
    try:
        if policy is None:
            policy = BusPolicy(
                visibility_timeout=float(ours.get("visibility_timeout", 30.0)),
                max_deliveries=int(ours.get("max_deliveries", 5)),
            )
        retry = float(ours.get("publish_retry", 30.0))
    except ValueError as exc:
        raise ValueError(f"bus URL {url!r}: {exc}") from None
    if not retry >= 0:
        raise ValueError(f"bus URL {url!r}: publish_retry must be >= 0, got {retry}")
    prefix = ours.get("prefix", "firebreak")
    return RabbitBus(rest, prefix=prefix, policy=policy, publish_retry=retry)


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


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RabbitBus(SetupClose):
    """A `TaskBus` on RabbitMQ; build with ``open_bus("amqp://…")``.

    Example:
        >>> async with RabbitBus("amqp://guest:guest@localhost/", prefix="billing") as bus:
        ...     await bus.publish("invoice.extract", {"run_id": "inv-42"}, key="inv-42")

    Args:
        url: ``amqp://`` or ``amqps://`` URL as aio-pika reads it.
        prefix: every queue and exchange name starts with ``<prefix>:``.
        policy: visibility timeout and maximum deliveries.
        publish_retry: seconds `publish` keeps retrying through a lost connection.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "firebreak",
        policy: BusPolicy | None = None,
        publish_retry: float = 30.0,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.policy = policy or BusPolicy()
        self.publish_retry = publish_retry
        self._started = False
        self._connection: AbstractConnection | None = None
        self._channel: AbstractChannel | None = None
        self._dlx: AbstractExchange | None = None
        self._lock = asyncio.Lock()
        self._declared: set[str] = set()
        self._consumers: set[RabbitConsumer] = set()
        self._changed: asyncio.Event | None = None
        self._retry_at = 0.0
        self._failure: BaseException | None = None

    def __repr__(self) -> str:
        return f"RabbitBus(prefix={self.prefix!r})"

    # -- connection ------------------------------------------------------------------

    async def setup(self) -> None:
        """Connect and declare the dead-letter exchange; idempotent."""
        if self._started:
            return
        await self._connect()
        self._started = True

    async def close(self) -> None:
        """Stop every consumer and close the connection (held messages return); idempotent."""
        self._started = False
        for consumer in list(self._consumers):
            await consumer.shutdown()
        self._consumers.clear()
        connection, self._connection, self._channel, self._dlx = self._connection, None, None, None
        if connection is not None:
            with contextlib.suppress(*_TRANSIENT):  # TimeoutError included
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await connection.close()

    async def _connect(self) -> AbstractConnection:
        """The open connection, reconnecting if it was lost."""
        async with self._lock:
            connection = self._connection
            if connection is not None and not connection.is_closed:
                channel = self._channel
                if channel is not None and not channel.is_closed:
                    return connection
            else:
                if connection is not None:
                    with contextlib.suppress(*_TRANSIENT):
                        async with asyncio.timeout(_CLOSE_TIMEOUT):
                            await connection.close()
                self._connection = self._channel = self._dlx = None
                if time.monotonic() < self._retry_at:  # one attempt per pause, not per caller
                    raise ConnectionError(f"RabbitMQ unreachable: {self._failure}")
                try:
                    connection = await aio_pika.connect(self.url, timeout=_OP_TIMEOUT)
                except _TRANSIENT as exc:
                    self._retry_at = time.monotonic() + _RECONNECT_PAUSE
                    self._failure = exc
                    raise
                self._connection = connection
                self._declared.clear()
            channel = await self._open(connection, publisher_confirms=True, on_return_raises=True)
            self._dlx = await channel.declare_exchange(
                self.dead_exchange, aio_pika.ExchangeType.DIRECT, durable=True, timeout=_OP_TIMEOUT
            )
            self._channel = channel
            return connection

    async def _open(self, connection: AbstractConnection, **options: Any) -> AbstractChannel:
        try:
            return await connection.channel(**options)
        except RuntimeError as exc:  # aiormq: the connection closed under aio-pika's feet
            if self._connection is connection:
                self._connection = self._channel = self._dlx = None
            raise ConnectionError(f"RabbitMQ connection lost: {exc}") from exc

    async def channel(self) -> AbstractChannel:
        """A new channel without confirms (after `setup`), reconnecting if need be."""
        return await self._open(await self.connection(), publisher_confirms=False)

    async def connection(self) -> AbstractConnection:
        """The open connection (after `setup`), reconnecting if it was lost."""
        if not self._started:
            raise RuntimeError("RabbitBus used before setup(); use `async with` or await setup()")
        return await self._connect()

    async def _publish_channel(self) -> tuple[AbstractChannel, AbstractExchange]:
        await self.connection()
        channel, dlx = self._channel, self._dlx
        if channel is None or dlx is None:  # pragma: no cover - _connect sets both
            raise aiormq.exceptions.ChannelInvalidStateError("no channel")
        return channel, dlx

    @property
    def changed(self) -> asyncio.Event:
        """Set (and replaced) whenever this process publishes: local consumers look at once."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    def _notify(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    # -- names -----------------------------------------------------------------------

    def queue_name(self, queue: str) -> str:
        """The RabbitMQ queue of `queue`."""
        return f"{self.prefix}:q:{queue}"

    def dead_name(self, queue: str) -> str:
        """The RabbitMQ queue of `queue`'s dead letters (also its routing key on the DLX)."""
        return f"{self.prefix}:dead:{queue}"

    @property
    def dead_exchange(self) -> str:
        """The dead-letter exchange of this prefix."""
        return f"{self.prefix}:dlx"

    async def declare(self, queue: str) -> None:
        """Declare `queue` and its dead letters (once per connection)."""
        if queue in self._declared:
            return
        name, dead = self.queue_name(queue), self.dead_name(queue)
        arguments: dict[str, Any] = {
            "x-queue-type": "quorum",
            "x-delivery-limit": self.policy.max_deliveries,
            "x-dead-letter-exchange": self.dead_exchange,
            "x-dead-letter-routing-key": dead,
        }
        async with await self.channel() as channel:
            dead_queue = await channel.declare_queue(
                dead, durable=True, arguments={"x-queue-type": "classic"}, timeout=_OP_TIMEOUT
            )
            await dead_queue.bind(self.dead_exchange, routing_key=dead, timeout=_OP_TIMEOUT)
        try:
            async with await self.channel() as channel:
                await channel.declare_queue(
                    name, durable=True, arguments=arguments, timeout=_OP_TIMEOUT
                )
        except aiormq.exceptions.ChannelPreconditionFailed as exc:
            # Declared before with other arguments (another max_deliveries): use it as it
            # is; the consumers count deliveries themselves, the broker's limit is a net.
            log.warning("queue %s exists with other arguments, using it: %s", name, exc)
            async with await self.channel() as channel:
                await channel.declare_queue(name, passive=True)
        self._declared.add(queue)

    # -- the protocol ----------------------------------------------------------------

    async def publish(self, queue: str, body: Mapping[str, Any], *, key: str) -> str:
        """Publish a persistent message to `queue` and wait for the broker's confirm."""
        text = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        message_id = uuid.uuid4().hex
        await self.send(queue, text, message_id=message_id, key=key, prior=0)
        self._notify()
        return message_id

    async def send(self, queue: str, raw: bytes, *, message_id: str, key: str, prior: int) -> None:
        """Publish raw bytes to `queue` (with its delivery count so far), retrying outages."""
        end = time.monotonic() + self.publish_retry
        pause = 0.1
        while True:
            try:
                await self.declare(queue)
                channel, _ = await self._publish_channel()
                message = aio_pika.Message(
                    raw,
                    message_id=message_id,
                    headers={_KEY: key, _PRIOR: prior},
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                )
                await channel.default_exchange.publish(
                    message, routing_key=self.queue_name(queue), mandatory=True
                )
            except _TRANSIENT as exc:
                if not self._started or time.monotonic() + pause > end:
                    raise
                log.warning("publish to %s failed, retrying: %s", queue, exc)
                self._declared.discard(queue)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            else:
                return

    async def kill(
        self, queue: str, raw: bytes, *, message_id: str, key: str, deliveries: int, reason: str
    ) -> None:
        """Publish a message to `queue`'s dead letters (through the dead-letter exchange)."""
        await self.declare(queue)
        _, dlx = await self._publish_channel()
        message = aio_pika.Message(
            raw,
            message_id=message_id,
            headers={_KEY: key, _PRIOR: deliveries, _REASON: reason},
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await dlx.publish(message, routing_key=self.dead_name(queue), mandatory=True)

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> RabbitConsumer:
        """A consumer of `queues` (queues are declared on its first `get`)."""
        consumer = RabbitConsumer(self, list(queues), group=group, name=name, limit=max_in_flight)
        self._consumers.add(consumer)
        return consumer

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """The dead letters of `queue`, oldest first (read, then returned to their queue)."""
        out: list[Delivery] = []
        seen: set[str] = set()
        channel = await self.channel()
        try:
            try:
                dead = await channel.declare_queue(self.dead_name(queue), passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return []
            for _ in range(limit):
                message = await dead.get(no_ack=False, fail=False)
                if message is None:
                    break
                letter = self._letter(queue, message)
                if letter.id not in seen:  # a crash between dead-lettering and ack
                    seen.add(letter.id)
                    out.append(letter)
        finally:
            with contextlib.suppress(*_TRANSIENT):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await channel.close()  # returns them all, in place (a classic queue)
        return out

    def _letter(self, queue: str, message: AbstractIncomingMessage) -> Delivery:
        headers = message.headers or {}
        reason = _text(headers.get(_REASON, ""))
        if not reason:  # dead-lettered by the broker (x-delivery-limit)
            reason = f"broker: {_text(headers.get('x-first-death-reason', 'dead-lettered'))}"
        deliveries = _int(headers.get(_PRIOR))
        if _REASON not in headers:
            deliveries += _int(headers.get("x-delivery-count")) + 1
        return Delivery(
            queue=queue,
            id=message.message_id or "",
            key=_text(headers.get(_KEY, "")),
            body=_body_of(message.body) or {},
            deliveries=deliveries,
            dead=True,
            reason=reason,
        )

    async def delete(self, queue: str) -> None:
        """Delete the queue and its dead letters; a no-op if missing."""
        self._declared.discard(queue)
        async with await self.channel() as channel:
            await channel.queue_delete(self.queue_name(queue), timeout=_OP_TIMEOUT)
            await channel.queue_delete(self.dead_name(queue), timeout=_OP_TIMEOUT)


@dataclass(slots=True, eq=False)
class _Held:
    delivery: Delivery
    message: AbstractIncomingMessage | None  # None: no longer ours at the broker
    raw: bytes
    deadline: float


class RabbitConsumer:
    """A consumer of one or more queues of a `RabbitBus`; see the module docstring."""

    def __init__(
        self, bus: RabbitBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        check_consumer(queues, limit)
        self.bus = bus
        self.queues = queues
        self.group = group
        self.name = name
        self.limit = limit
        self._held: dict[tuple[str, str], _Held] = {}
        self._leaving: list[_Held] = []  # held when closed: nacked at their deadline
        self._channel: AbstractChannel | None = None
        self._amqp: dict[str, AbstractQueue] = {}
        self._next = 0  # round robin over queues
        # The poll interval, kept across `get` calls: back to _POLL_MIN when a message came,
        # doubling up to _POLL_MAX while none does. A busy consumer looks again within
        # milliseconds; an idle one costs the broker five gets a second.
        self._pause = _POLL_MIN
        self._slot = asyncio.Event()
        self._timer: asyncio.Task[None] | None = None
        self._closed = False

    def __repr__(self) -> str:
        return f"RabbitConsumer(name={self.name!r}, queues={self.queues!r})"

    @property
    def in_flight(self) -> int:
        """Messages handed out and not yet settled."""
        return len(self._held)

    async def _queues(self) -> dict[str, AbstractQueue]:
        channel = self._channel
        if channel is None or channel.is_closed:
            self._drop_channel()
            for queue in self.queues:
                await self.bus.declare(queue)
            channel = await self.bus.channel()
            self._channel = channel
            self._amqp = {
                q: await channel.get_queue(self.bus.queue_name(q), ensure=False)
                for q in self.queues
            }
        return self._amqp

    def _drop_channel(self) -> None:
        """The channel is gone: the broker has requeued what it held."""
        self._channel = None
        self._amqp = {}
        for held in (*self._held.values(), *self._leaving):
            held.message = None

    async def get(self, wait: float) -> Delivery | None:
        """The next message of any of the queues, or ``None`` after `wait` seconds."""
        end = time.monotonic() + wait
        task = asyncio.current_task()
        base = task.cancelling() if task is not None else 0
        while not self._closed:
            _cancelled(task, base)
            left = end - time.monotonic()
            if len(self._held) >= self.limit:
                if left <= 0:
                    return None
                self._slot.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._slot.wait()
                continue
            changed = self.bus.changed  # before looking: a publish after it wakes us
            try:
                delivery = await self._take()
            except _TRANSIENT as exc:
                log.warning("consumer %s: broker unreachable, waiting: %s", self.name, exc)
                self._drop_channel()
                delivery, self._pause = None, _POLL_MAX * 2
            _cancelled(task, base)  # what it took stays held: back after the timeout
            if delivery is not None:
                self._pause = _POLL_MIN
                return delivery
            left = end - time.monotonic()
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(self._pause, left)):
                    await changed.wait()
                    self._pause = _POLL_MIN / 2
            self._pause = min(self._pause * 2, _POLL_MAX)
        return None

    async def _take(self) -> Delivery | None:
        amqp = await self._queues()
        count = len(self.queues)
        for i in range(count):
            queue = self.queues[(self._next + i) % count]
            # No timeout: on Python 3.11 `asyncio.wait_for` can swallow a cancellation
            # that lands as the reply arrives (a dead broker is noticed by heartbeats).
            message = await amqp[queue].get(no_ack=False, fail=False, timeout=None)
            if message is not None:
                self._next = (self._next + i + 1) % count
                return await self._accept(queue, message)
        return None

    async def _accept(self, queue: str, message: AbstractIncomingMessage) -> Delivery:
        headers = message.headers or {}
        policy = self.bus.policy
        message_id = message.message_id or f"tag-{message.delivery_tag}"
        key = _text(headers.get(_KEY, ""))
        deliveries = _int(headers.get(_PRIOR)) + _int(headers.get("x-delivery-count")) + 1
        body = _body_of(message.body)
        reason = ""
        if deliveries > policy.max_deliveries:
            reason = f"delivered {deliveries} times (max {policy.max_deliveries})"
        elif body is None:
            reason = "unreadable body"
        if reason:
            try:
                await self.bus.kill(
                    queue,
                    message.body,
                    message_id=message_id,
                    key=key,
                    deliveries=deliveries,
                    reason=reason,
                )
                await message.ack()
            except BaseException:
                with contextlib.suppress(*_TRANSIENT):
                    await message.nack(requeue=True)
                raise
            return Delivery(
                queue=queue,
                id=message_id,
                key=key,
                body=body or {},
                deliveries=deliveries,
                dead=True,
                reason=reason,
            )
        delivery = Delivery(
            queue=queue, id=message_id, key=key, body=body or {}, deliveries=deliveries
        )
        self._held[(queue, message_id)] = _Held(
            delivery, message, message.body, time.monotonic() + policy.visibility
        )
        self._watch()
        return delivery

    # -- visibility timeout ------------------------------------------------------------

    def _watch(self) -> None:
        if self._timer is None or self._timer.done():
            self._timer = asyncio.get_running_loop().create_task(self._expire())

    async def _expire(self) -> None:
        """Nack (requeue, counted) what is held past its visibility timeout."""
        task = asyncio.current_task()
        while True:
            _cancelled(task, 0)
            live = [h for h in (*self._held.values(), *self._leaving) if h.message is not None]
            if not live:
                self._leaving.clear()
                self._timer = None
                if self._closed:
                    await self._close_channel()
                return
            now = time.monotonic()
            for held in live:
                if held.deadline <= now and held.message is not None:
                    message, held.message = held.message, None
                    log.info("task %s held past its visibility timeout", held.delivery.id)
                    with contextlib.suppress(*_TRANSIENT):
                        await message.nack(requeue=True)
            soonest = min((h.deadline for h in live if h.message is not None), default=now)
            await asyncio.sleep(max(soonest - time.monotonic(), 0.005))

    # -- settling ------------------------------------------------------------------------

    def _settle(self, delivery: Delivery) -> _Held | None:
        held = self._held.pop((delivery.queue, delivery.id), None)
        self._slot.set()
        return held

    async def ack(self, delivery: Delivery) -> None:
        """Ack it, if it is still ours (else it is back in the queue: a no-op)."""
        held = self._settle(delivery)
        if held is not None and held.message is not None:
            message, held.message = held.message, None
            try:
                await message.ack()
            except _TRANSIENT as exc:  # the channel died: the broker redelivers it
                log.warning("could not ack %s (it will be redelivered): %s", delivery.id, exc)

    async def release(self, delivery: Delivery) -> None:
        """Republish it with its count so far, then ack this delivery: not counted."""
        held = self._settle(delivery)
        if held is None or held.message is None:
            return
        message, held.message = held.message, None
        try:
            await self.bus.send(
                delivery.queue,
                held.raw,
                message_id=delivery.id,
                key=delivery.key,
                prior=max(delivery.deliveries - 1, 0),
            )
        except BaseException:
            with contextlib.suppress(*_TRANSIENT):
                await message.nack(requeue=True)  # back, if counted
            raise
        with contextlib.suppress(*_TRANSIENT):  # a failed ack: a duplicate, never a loss
            await message.ack()
        self.bus._notify()  # noqa: SLF001 - our own bus

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Move it to the dead letters now, if it is still ours."""
        held = self._settle(delivery)
        if held is None or held.message is None:
            return
        message, held.message = held.message, None
        try:
            await self.bus.kill(
                delivery.queue,
                held.raw,
                message_id=delivery.id,
                key=delivery.key,
                deliveries=delivery.deliveries,
                reason=reason,
            )
        except BaseException:
            with contextlib.suppress(*_TRANSIENT):
                await message.nack(requeue=True)
            raise
        with contextlib.suppress(*_TRANSIENT):
            await message.ack()

    async def touch(self, delivery: Delivery) -> None:
        """Restart its visibility timeout, if it is still ours."""
        held = self._held.get((delivery.queue, delivery.id))
        if held is not None and held.message is not None:
            held.deadline = time.monotonic() + self.bus.policy.visibility

    async def close(self) -> None:
        """Stop; what is still held is nacked when its visibility timeout passes."""
        if self._closed:
            return
        self._closed = True
        self._leaving.extend(h for h in self._held.values() if h.message is not None)
        self._held.clear()
        self._slot.set()
        if self._leaving:
            self._watch()
        elif self._timer is None:
            await self._close_channel()
            self.bus._consumers.discard(self)  # noqa: SLF001 - our own bus

    async def _close_channel(self) -> None:
        channel, self._channel = self._channel, None
        self._amqp = {}
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(*_TRANSIENT):
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await channel.close()
        if self._closed:
            self.bus._consumers.discard(self)  # noqa: SLF001 - our own bus

    async def shutdown(self) -> None:
        """Stop now, closing the channel (the broker returns what it held); for the bus."""
        self._closed = True
        timer, self._timer = self._timer, None
        if timer is not None and timer is not asyncio.current_task():
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        self._held.clear()
        self._leaving.clear()
        await self._close_channel()
