"""`NatsConsumer`: a member of a consumer group of a `NatsBus`, and what both sides share.

How it pulls, counts deliveries and settles, and why, is told in the module docstring of
`firebreak.bus.nats`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.client import JetStreamContext

from firebreak.bus.base import ConsumerBase, Delivery

if TYPE_CHECKING:
    from firebreak.bus.nats import NatsBus

__all__ = ["API_TIMEOUT", "KEY", "TRANSIENT", "NatsConsumer", "json_object"]

log = logging.getLogger("firebreak.bus.nats")

KEY = "Fb-Key"
"""Header carrying the ordering key (percent-encoded: header values are one line)."""
API_TIMEOUT = 2.0
"""Seconds a JetStream API call, an ack or a publish attempt may take."""
TRANSIENT: tuple[type[BaseException], ...] = (
    TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.StaleConnectionError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.FlushTimeoutError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
    nats.js.errors.NoStreamResponseError,
)
"""What an unreachable or restarting server raises: retried, never lost."""

_NOT_READY: tuple[type[BaseException], ...] = (*TRANSIENT, nats.js.errors.APIError)
_LONG_PULL = 5.0
"""Longest pull request, seconds (a pull outlives `get`: what it brings waits in a buffer)."""
_SHORT_PULL = 0.1
"""Pull request length while queues take turns for too few free slots."""
_GRACE = 1.0
"""Seconds past a pull's expiry after which its end is assumed (its status was lost)."""
_COMPACT_EVERY = 10.0
"""Seconds between compactions of an idle queue by one consumer."""


def _status(msg: Msg) -> str | None:
    return JetStreamContext.is_status_msg(msg)


def json_object(text: str) -> dict[str, Any] | None:
    """`text` as a JSON object, or ``None``."""
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


@dataclass(slots=True)
class _Held:
    msg: Msg
    seq: int
    since: float  # monotonic time of delivery (or last touch)
    releases: int  # hand-backs recorded for it (cleared when it is settled)


@dataclass(slots=True, eq=False)
class _Pull:
    """This consumer's pulls from one queue: at most one outstanding pull request."""

    queue: str
    stream: str
    inbox: str
    sub: Subscription | None = None
    ready: bool = False  # stream and durable made
    request: int = 0  # number of the outstanding pull request (0: none)
    credit: int = 0  # messages it may still bring
    until: float = 0.0  # after this its end is assumed
    epoch: int = 0
    pause: float = 0.0  # no pull before this (JetStream did not answer)
    ready_epoch: int = 0  # the connection epoch it was made ready in
    idle: bool = False  # its last pull found nothing
    compact_at: float = 0.0  # no compaction before this


class NatsConsumer(ConsumerBase["NatsBus"]):
    """A member of a consumer group (a durable pull consumer per queue) of a `NatsBus`.

    It pulls only for its free slots. Over several queues, each queue waits with its own
    pull; when there are fewer free slots than queues, the queues take turns with short
    pulls, so the bound holds and no queue is starved.
    """

    def __init__(
        self, bus: NatsBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        super().__init__(bus, queues, group=group, name=name, limit=limit)
        self._pulls = [_Pull(queue=q, stream=bus.stream(q), inbox="") for q in queues]
        self._arrived: deque[tuple[_Pull, Msg, float]] = deque()
        self._held: dict[tuple[str, str], _Held] = {}
        self._wake = asyncio.Event()
        self._requests = itertools.count(1)
        self._turn = 0
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Messages delivered to this consumer and not yet settled (buffered ones too)."""
        return len(self._held) + len(self._arrived)

    # -- pulling ----------------------------------------------------------------------

    async def _ready(self, pull: _Pull) -> None:
        if pull.ready:
            return
        bus = self.bus
        if pull.sub is None:
            pull.inbox = bus.client.new_inbox()

            async def arrive(msg: Msg, pull: _Pull = pull) -> None:
                self._arrive(pull, msg)

            pull.sub = await bus.client.subscribe(f"{pull.inbox}.*", cb=arrive)
        await bus.ensure_group(pull.queue, self.group)
        pull.ready, pull.ready_epoch = True, bus.epoch

    def _arrive(self, pull: _Pull, msg: Msg) -> None:
        """Subscription callback: a delivery, or the status ending a pull request.

        A delivery carries its stream subject, so it counts against the outstanding
        request; a status carries the request's own reply subject, so a late status of a
        request given up on (after a reconnect) does not end the current one.
        """
        status = _status(msg)
        if status is None:
            if not msg.reply.startswith("$JS.ACK."):
                return
            if pull.request:
                pull.credit -= 1
                if pull.credit <= 0:  # the batch is full: the pull request is over
                    pull.credit = pull.request = 0
            self._arrived.append((pull, msg, time.monotonic()))
        elif status == "100":  # heartbeat or flow control: not asked for
            return
        elif msg.subject == f"{pull.inbox}.{pull.request}":  # 404/408/409/503: it is over
            pull.credit = pull.request = 0
            pull.idle = status in {"404", "408"}
            description = (msg.headers or {}).get("Description", "").lower()
            if status == "503" or (status == "409" and "deleted" in description):
                # No consumer answers (deleted, or JetStream is starting): make it again,
                # after a pause so a restarting server is not flooded with pulls.
                pull.ready = False
                pull.pause = time.monotonic() + 0.25
        self._wake.set()

    async def _pull(self, end: float) -> None:
        """Send pull requests for the free slots (see the class docstring)."""
        now = time.monotonic()
        bus = self.bus
        for pull in self._pulls:
            if pull.request and (now > pull.until or pull.epoch != bus.epoch):
                pull.request, pull.credit = 0, 0  # its status was lost (a reconnect)
            if pull.ready_epoch != bus.epoch:  # reconnected: the server may have restarted
                pull.ready = False
        outstanding = sum(p.credit for p in self._pulls)
        budget = self.limit - len(self._held) - len(self._arrived) - outstanding
        if budget <= 0 or not bus.client.is_connected:
            return
        idle = []
        for pull in self._pulls:
            if pull.request or pull.pause > now:
                continue
            try:
                async with asyncio.timeout(API_TIMEOUT):
                    await self._ready(pull)
            except _NOT_READY as exc:
                log.debug("consumer %s: queue %s not ready: %r", self.name, pull.queue, exc)
                pull.pause = time.monotonic() + 0.25
                continue
            idle.append(pull)
        if not idle:
            return
        start = self._turn % len(idle)
        idle = idle[start:] + idle[:start]
        if len(idle) <= budget:
            share, extra = divmod(budget, len(idle))
            batches = [share + (i < extra) for i in range(len(idle))]
            expires = min(max(end - now, 1.0), _LONG_PULL)
        else:  # too few slots for every queue: take turns
            idle = idle[:budget]
            batches = [1] * budget
            expires = _SHORT_PULL
            self._turn += budget
        for pull, batch in zip(idle, batches, strict=True):
            number = next(self._requests)
            request = {"batch": batch, "expires": int(expires * 1e9)}
            pull.request, pull.credit = number, batch
            pull.until = now + expires + _GRACE
            pull.epoch = bus.epoch
            await bus.client.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{pull.stream}.{bus.durable(self.group)}",
                json.dumps(request).encode(),
                reply=f"{pull.inbox}.{number}",
            )

    async def _housekeeping(self) -> None:
        """Compact an idle queue now and then (see `NatsBus.ensure_group`)."""
        now = time.monotonic()
        for pull in self._pulls:
            if pull.idle and pull.ready and now >= pull.compact_at:
                pull.idle, pull.compact_at = False, now + _COMPACT_EVERY
                await self.bus.compact(pull.queue, self.group)

    async def get(self, wait: float) -> Delivery | None:
        """The next message, or ``None`` after `wait` seconds (also while the server is away).

        Redeliveries of messages abandoned by dead consumers come first (JetStream serves
        a consumer's redeliveries before new messages).
        """
        end = time.monotonic() + wait
        while not self._closed:
            self._wake.clear()
            if self._arrived:
                pull, msg, arrived = self._arrived.popleft()
                try:
                    delivery = await self._accept(pull, msg, arrived)
                except TRANSIENT as exc:
                    self._arrived.appendleft((pull, msg, arrived))
                    log.warning("consumer %s: could not take a message: %r", self.name, exc)
                    await asyncio.sleep(min(0.2, max(end - time.monotonic(), 0.0)))
                    if time.monotonic() >= end:
                        return None
                    continue
                if delivery is not None:
                    return delivery
                continue
            try:
                await self._pull(end)
                await self._housekeeping()
            except _NOT_READY as exc:
                log.debug("consumer %s: pull failed: %r", self.name, exc)
            left = end - time.monotonic()
            if left <= 0:
                return None
            pending = [p.until for p in self._pulls if p.request]
            if pending:  # wake to renew a pull whose end went unannounced
                left = min(left, max(min(pending) - time.monotonic(), 0.01))
            else:  # nothing asked for: the server is away, or a queue pauses
                left = min(left, 0.25)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._wake.wait()
        return None

    async def _accept(self, pull: _Pull, msg: Msg, arrived: float) -> Delivery | None:
        """Turn an arrived message into a delivery (or a dead letter); None: dropped."""
        bus = self.bus
        policy = bus.policy
        if time.monotonic() - arrived >= policy.visibility:
            return None  # waited in the buffer past its ack wait: redelivered anyway
        meta = msg.metadata
        seq = int(meta.sequence.stream)
        delivered = int(meta.num_delivered)
        releases = await bus.releases(pull.queue, seq) if delivered > 1 else 0
        held = _Held(msg=msg, seq=seq, since=arrived, releases=releases)
        deliveries = max(delivered - releases, 1)
        key = unquote((msg.headers or {}).get(KEY, ""))
        text = msg.data.decode(errors="replace")
        body = json_object(text)
        reason = ""
        if deliveries > policy.max_deliveries:
            reason = f"delivered {deliveries} times (max {policy.max_deliveries})"
        elif body is None:
            reason = "unreadable body"
        delivery = Delivery(
            queue=pull.queue,
            id=str(seq),
            key=key,
            body=body or {},
            deliveries=deliveries,
            dead=bool(reason),
            reason=reason,
        )
        if reason:
            await self._bury(held, delivery, body=text, reason=reason)
        else:
            self._held[(pull.queue, delivery.id)] = held
        return delivery

    # -- settling ---------------------------------------------------------------------

    async def _settle(self, queue: str, held: _Held, kind: bytes) -> None:
        """Ack or terminate, waiting for the server to confirm it; drop its hand-backs."""
        await self.bus.client.request(held.msg.reply, kind, timeout=API_TIMEOUT)
        if held.releases:
            await self.bus.forget_releases(queue, held.seq)

    async def _bury(self, held: _Held, delivery: Delivery, *, body: str, reason: str) -> None:
        """Publish it to the dead letters (`body`: its text), then terminate it."""
        await self.bus.kill(
            delivery.queue,
            delivery.id,
            key=delivery.key,
            body=body,
            deliveries=delivery.deliveries,
            reason=reason,
        )
        await self._settle(delivery.queue, held, b"+TERM")

    async def _hand_back(self, queue: str, msg: Msg, seq: int) -> None:
        """Count a hand-back, then ``NAK`` it: redelivered at once, its count unchanged."""
        await self.bus.add_release(queue, seq)
        await self.bus.client.publish(msg.reply, b"-NAK")

    def _take(self, delivery: Delivery) -> _Held | None:
        held = self._held.pop((delivery.queue, delivery.id), None)
        self._wake.set()
        return held

    async def ack(self, delivery: Delivery) -> None:
        """Ack it (confirmed by the server): it leaves the work-queue stream."""
        held = self._take(delivery)
        if held is not None:
            await self._settle(delivery.queue, held, b"+ACK")

    async def release(self, delivery: Delivery) -> None:
        """Count a hand-back, then ``NAK`` it: redelivered at once, its count unchanged."""
        held = self._take(delivery)
        if held is None:
            return
        if time.monotonic() - held.since >= self.bus.policy.visibility:
            return  # held past its timeout: no longer ours; it comes back on its own
        await self._hand_back(delivery.queue, held.msg, held.seq)

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Publish it to the dead letters, then terminate it."""
        held = self._take(delivery)
        if held is not None:
            body = json.dumps(delivery.body, separators=(",", ":"))
            await self._bury(held, delivery, body=body, reason=reason)

    async def touch(self, delivery: Delivery) -> None:
        """``+WPI``: restart its ack wait."""
        held = self._held.get((delivery.queue, delivery.id))
        if held is None:
            return
        await self.bus.client.publish(held.msg.reply, b"+WPI")
        held.since = time.monotonic()

    async def close(self) -> None:
        """Stop; hand back buffered messages not yet handed out; drop the subscriptions."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        now = time.monotonic()
        while self._arrived:
            pull, msg, arrived = self._arrived.popleft()
            if now - arrived >= self.bus.policy.visibility:
                continue
            try:
                await self._hand_back(pull.queue, msg, int(msg.metadata.sequence.stream))
            except Exception as exc:  # noqa: BLE001 - it comes back after its ack wait
                log.warning("consumer %s: could not hand a message back: %r", self.name, exc)
        self._held.clear()
        for pull in self._pulls:
            if pull.ready:
                try:
                    async with asyncio.timeout(API_TIMEOUT):
                        await self.bus.compact(pull.queue, self.group)
                except Exception as exc:  # noqa: BLE001 - tidying only; the next one will do
                    log.debug("consumer %s: no compaction of %s: %r", self.name, pull.queue, exc)
            sub, pull.sub = pull.sub, None
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
