"""`RabbitBus`: a `TaskBus` on RabbitMQ via aio-pika (``amqp://``, extra ``rabbitmq``).

Layout, under a prefix (default ``firebreak``):

- ``<prefix>:q:<queue>``: the queue's messages, a durable **quorum queue** (it counts the
  deliveries of a message in ``x-delivery-count``: a nack with requeue and a consumer
  whose channel closes both count, as a worker that dies does);
- ``<prefix>:dead:<queue>``: its dead letters, a durable classic queue bound to the
  dead-letter exchange ``<prefix>:dlx`` (direct), which the work queue also names as its
  ``x-dead-letter-exchange``;
- ``<prefix>:q:replies.<name>``: an orchestrator's reply queue (`is_reply_queue`), a
  classic queue in memory with no dead letters, deleted by the broker after 10 minutes
  unused; its messages are transient (a lost reply costs a store read, see
  `firebreak.engine.bus_executor`).

Task messages are persistent and published with publisher confirms (``publish`` returns once
the broker has them), acks are manual.

How the protocol maps to RabbitMQ:

- **taking a message**: each queue has a push subscription (``basic.consume``) with a
  prefetch of its own, one slot (a consumer of one queue: all of ``max_in_flight``); the
  rest of ``max_in_flight`` is taken with ``basic.get`` from the queues whose slot is
  busy (1 ms after a message, doubling to 200 ms while none comes), so one busy
  queue among idle ones gets ``max_in_flight`` - (queues) + 1 at a time. The consumer
  counts what its subscriptions may still push as taken, so the backpressure is exact
  over any number of queues (quorum queues have no per-channel prefetch, and a prefetch
  of ``max_in_flight`` per queue would let a worker over 4 queues hold 4x its limit). A
  consumer of more queues than ``max_in_flight`` cannot give each a slot: it only polls
  with ``basic.get``, as above. A pushed message waits in the consumer for a ``get``; one
  that no ``get`` takes within the visibility timeout goes back as by a release, and the
  subscriptions stop until the next ``get`` (as on close, below). RabbitMQ before 4.3
  (3.10 here) counts every return of a message (a nack, a closing channel, a push that
  crosses a ``basic.cancel``), so the consumer never takes more than it may work on.
- **delivery count** = ``fb-n`` (deliveries carried over by a release, see below) +
  ``x-delivery-count`` + 1. A delivery past ``max_deliveries`` is moved to the dead letters
  (publish with confirm, then ack) and handed out once with ``dead=True``, as on Redis.
  The queue's ``x-delivery-limit`` is ``max_deliveries``: should the consumer holding that
  last, dead delivery die before moving it, the broker dead-letters it through the
  exchange itself (its reason then reads ``broker: delivery_limit``).
- **visibility timeout** is enforced by the consumer holding the message: a message not
  acked, released, rejected or touched within it is returned with ``basic.reject``
  (requeue; counted, on RabbitMQ 4.3 too, where a nack no longer counts) and goes to the
  next consumer that asks (if its queue's subscription is full, it is cancelled first, so
  that the message is not pushed back to the consumer that let it lapse; the next ``get``
  subscribes again; a subscription with room is not cancelled, see close). A
  consumer whose process dies, or whose connection drops, loses its messages at once (the
  broker requeues them, counted): that is sooner than the visibility timeout, never
  later. A process that is alive but frozen (a blocked event loop) cannot return them:
  they stay held until its connection dies (heartbeat, 60 s by default,
  ``?heartbeat=N``) or the broker's ``consumer_timeout`` (server-wide, 30 min by default)
  closes its channel.
- **touch** restarts that timer; it costs no round trip.
- **release** republishes the message (same id and key, ``fb-n`` = its deliveries minus
  this one) with a confirm, then acks the original: it is not counted, and another
  consumer can take it at once (a full subscription to its queue is cancelled first, so
  that it is not pushed back here), but it goes to the back of the queue (Redis hands a
  released message out before new ones).
- **close** cancels the subscriptions and hands back what was pushed and not taken (as
  by a release; a push crossing the cancel comes back counted once); what the consumer
  still holds is returned when its visibility timeout passes (as if it had died), then
  the channel closes. ``RabbitBus.close`` closes the connection, which returns what is
  still held at once.
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
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import aiormq.exceptions
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
)

from firebreak._lifecycle import SetupClose
from firebreak._urls import split_options
from firebreak.bus._rabbitmq_consumer import (
    _KEY,
    _PRIOR,
    _REASON,
    _TRANSIENT,
    RabbitConsumer,
    _body_of,
    _close,
    _int,
    _text,
)
from firebreak.bus.base import BusPolicy, Delivery, is_reply_queue

__all__ = ["RabbitBus", "RabbitConsumer", "from_url"]

log = logging.getLogger(__name__)

_OPTIONS = frozenset({"prefix", "visibility_timeout", "max_deliveries", "publish_retry"})
_RECONNECT_PAUSE = 0.5
_OP_TIMEOUT = 30.0  # one broker round trip (declare, delete, connect)
_REPLY_EXPIRES = 600_000  # ms unused after which the broker deletes a reply queue
_PERSISTENT, _NOT_PERSISTENT = (
    aio_pika.DeliveryMode.PERSISTENT,
    aio_pika.DeliveryMode.NOT_PERSISTENT,
)


def from_url(url: str, *, policy: BusPolicy | None = None) -> RabbitBus:
    """Build (not connect) a bus from an ``amqp://`` URL; see the module docstring."""
    ours, rest = split_options(url, _OPTIONS)
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
        for consumer in list(self._consumers):
            await consumer.shutdown()  # may republish what was pushed to it
        self._started = False
        self._consumers.clear()
        connection, self._connection, self._channel, self._dlx = self._connection, None, None, None
        if connection is not None:
            await _close(connection)

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
                    await _close(connection)
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

    def _notify(self) -> None:
        """This process published: its polling consumers look at once."""
        for consumer in self._consumers:
            if consumer.polling:
                consumer._wake.set()  # noqa: SLF001 - our own consumers

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
        arguments: dict[str, Any]
        if is_reply_queue(queue):
            # Notices that may be lost: in memory, no dead letters, deleted once unused
            # (an orchestrator that died without deleting it). A quorum queue's disk
            # write cost every step's reply 0.5-1 ms here.
            durable, arguments = False, {"x-queue-type": "classic", "x-expires": _REPLY_EXPIRES}
        else:
            durable = True
            arguments = {
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
                    name, durable=durable, arguments=arguments, timeout=_OP_TIMEOUT
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

    async def send(
        self, queue: str, raw: bytes, *, message_id: str, key: str, prior: int, reason: str = ""
    ) -> None:
        """Publish raw bytes to `queue` with its count so far, retrying outages.

        With a `reason`, to the queue's dead letters instead (`prior`: all its deliveries),
        and no retry: the caller returns the message, to be dead-lettered on its next delivery.
        """
        end = time.monotonic() + self.publish_retry
        pause = 0.1
        headers: dict[str, Any] = {_KEY: key, _PRIOR: prior} | ({_REASON: reason} if reason else {})
        while True:
            try:
                await self.declare(queue)
                channel, dlx = await self._publish_channel()
                message = aio_pika.Message(
                    raw,
                    message_id=message_id,
                    headers=headers,
                    content_type="application/json",
                    delivery_mode=_NOT_PERSISTENT if is_reply_queue(queue) else _PERSISTENT,
                )
                exchange, to = (dlx, self.dead_name(queue)) if reason else (None, "")
                await (exchange or channel.default_exchange).publish(
                    message, routing_key=to or self.queue_name(queue), mandatory=True
                )
            except _TRANSIENT as exc:
                if reason or not self._started or time.monotonic() + pause > end:
                    raise
                log.warning("publish to %s failed, retrying: %s", queue, exc)
                self._declared.discard(queue)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
            else:
                return

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
            await _close(channel)  # returns them all, in place (a classic queue)
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
