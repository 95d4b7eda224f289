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

- **taking a message**: each queue has a push subscription (``basic.consume``) with a
  prefetch of its own, one slot (a consumer of one queue: all of ``max_in_flight``); the
  rest of ``max_in_flight`` is taken with ``basic.get`` from the queues whose slot is
  busy (again 1 ms after a message, doubling to 200 ms while none comes). The consumer
  counts what its subscriptions may still push as taken, so the backpressure is exact
  over any number of queues (quorum queues have no per-channel prefetch, and a prefetch
  of ``max_in_flight`` per queue would let a worker over 4 queues hold 4x its limit). A
  consumer of more queues than ``max_in_flight`` cannot give each a slot: it only polls
  with ``basic.get``, as above. A pushed message waits in the consumer for a ``get``; one
  that no ``get`` takes within the visibility timeout goes back as by a release, and the
  subscriptions stop until the next ``get``. RabbitMQ before 4.3 (3.10 here) counts
  every return of a message (a nack, a closing channel, a push that crosses a
  ``basic.cancel``), so the consumer never takes more than it may work on.
- **delivery count** = ``fb-n`` (deliveries carried over by a release, see below) +
  ``x-delivery-count`` + 1. A delivery past ``max_deliveries`` is moved to the dead letters
  (publish with confirm, then ack) and handed out once with ``dead=True``, as on Redis.
  The queue's ``x-delivery-limit`` is ``max_deliveries``: should the consumer holding that
  last, dead delivery die before moving it, the broker dead-letters it through the
  exchange itself (its reason then reads ``broker: delivery_limit``).
- **visibility timeout** is enforced by the consumer holding the message: a message not
  acked, released, rejected or touched within it is returned with ``basic.reject``
  (requeue; counted, on RabbitMQ 4.3 too, where a nack no longer counts) and goes to the
  next consumer that asks (its queue's subscription is cancelled first, so that it is not
  pushed back to the consumer that let it lapse; its next ``get`` subscribes again). A
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
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
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


async def _close(closable: AbstractChannel | AbstractConnection) -> None:
    """Close it, if the broker still answers."""
    if not closable.is_closed:
        with contextlib.suppress(*_TRANSIENT):  # TimeoutError included
            async with asyncio.timeout(_CLOSE_TIMEOUT):
                await closable.close()


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
        for held in (*self._held.values(), *self._leaving):
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
        push = _Push(queue, room if len(self.queues) == 1 else 1)
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
            lambda: self.bus.kill(
                d.queue,
                held.raw,
                message_id=d.id,
                key=d.key,
                deliveries=d.deliveries,
                reason=reason,
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
            live = [h for h in (*self._held.values(), *self._leaving) if h.message is not None]
            if not live and not self._inbox:
                self._leaving.clear()
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
                    await self._unsubscribe(held.delivery.queue)  # not pushed back to us
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
        push = self._pushes.get(delivery.queue)
        if push is not None and push.unacked >= push.prefetch and held.message is not None:
            # So that it goes to another consumer. Only while the subscription is full: a
            # push crossing a basic.cancel comes back counted (RabbitMQ 3.x).
            await self._unsubscribe(delivery.queue)
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
        self._leaving.extend(h for h in self._held.values() if h.message is not None)
        self._held.clear()
        if self._leaving:
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
        self._leaving.clear()
        await self._close_channel()
