"""`NatsReplyConsumer`: an orchestrator's reply queue on NATS, as a core NATS subject.

Replies are notices that may be lost (`firebreak.bus.base`: the orchestrator's executor also
reads the store), so they need none of JetStream: a reply queue (`is_reply_queue`) is a
plain subject, published to with core NATS (at most once, in memory) and read through a
subscription. Nothing stays on the server once its orchestrator is gone, and a reply takes
one hop through the server with no stream write and no pull. A reply published while
nobody subscribes (an orchestrator that died, or is reconnecting) is dropped; the reader
subscribes on its first `get`, which the executor starts as it publishes its first task,
so that task's reply could in principle come before the subscription (it is then found by
the executor's store poll).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import deque
from typing import TYPE_CHECKING
from urllib.parse import unquote

from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from firebreak.bus._nats_consumer import KEY, json_object
from firebreak.bus.base import ConsumerBase, Delivery

if TYPE_CHECKING:
    from firebreak.bus.nats import NatsBus

__all__ = ["MSG_ID", "NatsReplyConsumer"]

log = logging.getLogger("firebreak.bus.nats")

MSG_ID = "Nats-Msg-Id"
"""Header carrying a message's id (a reply's, as a task's)."""


class NatsReplyConsumer(ConsumerBase["NatsBus"]):
    """A reader of reply queues: a subscription each, what arrived waiting in memory.

    `get` hands out what arrived, no more than ``max_in_flight`` unacked at a time (the rest
    waits here: a subscription cannot refuse a message). `release` puts one back first in
    line; `reject` drops it (a notice has no dead letters); `touch` does nothing (there is
    no visibility timeout: what this reader holds stays with it).
    """

    def __init__(
        self, bus: NatsBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        super().__init__(bus, queues, group=group, name=name, limit=limit)
        self._subs: list[Subscription] = []
        self._arrived: deque[Delivery] = deque()
        self._held: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()
        self._closed = False

    @property
    def in_flight(self) -> int:
        """Replies handed out and not yet settled."""
        return len(self._held)

    async def _subscribe(self) -> None:
        if self._subs or self._closed:
            return
        for queue in self.queues:

            async def arrive(msg: Msg, queue: str = queue) -> None:
                self._arrive(queue, msg)

            self._subs.append(await self.bus.client.subscribe(self.bus.subject(queue), cb=arrive))

    def _arrive(self, queue: str, msg: Msg) -> None:
        body = json_object(msg.data.decode(errors="replace"))
        headers = msg.headers or {}
        if body is None:
            log.warning("dropping an unreadable reply on %s", queue)
            return
        self._arrived.append(
            Delivery(
                queue=queue,
                id=headers.get(MSG_ID) or uuid.uuid4().hex,
                key=unquote(headers.get(KEY, "")),
                body=body,
            )
        )
        self._wake.set()

    async def get(self, wait: float) -> Delivery | None:
        """The next reply, or ``None`` after `wait` seconds without one (or without room)."""
        await self._subscribe()
        end = time.monotonic() + wait
        while True:
            if self._arrived and len(self._held) < self.limit:
                delivery = self._arrived.popleft()
                self._held.add((delivery.queue, delivery.id))
                return delivery
            left = end - time.monotonic()
            if left <= 0:
                return None
            self._wake.clear()
            try:
                async with asyncio.timeout(left):
                    await self._wake.wait()
            except TimeoutError:
                return None

    def _settle(self, delivery: Delivery) -> bool:
        key = (delivery.queue, delivery.id)
        if key not in self._held:
            return False
        self._held.discard(key)
        self._wake.set()  # room for the next
        return True

    async def ack(self, delivery: Delivery) -> None:
        """Done with it."""
        self._settle(delivery)

    async def release(self, delivery: Delivery) -> None:
        """Hand it back: first in line for the next `get`."""
        if self._settle(delivery):
            self._arrived.appendleft(delivery)

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Drop it: a notice has no dead-letter destination."""
        if self._settle(delivery):
            log.warning("dropping reply %s on %s: %s", delivery.id, delivery.queue, reason)

    async def touch(self, delivery: Delivery) -> None:
        """Nothing to do: a held reply never goes back by itself."""

    async def close(self) -> None:
        """Unsubscribe; what arrived and was not handed out is dropped."""
        self._closed = True
        subs, self._subs = self._subs, []
        for sub in subs:
            await sub.unsubscribe()
        self._arrived.clear()
