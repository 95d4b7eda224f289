"""`RedisConsumer`: a member of a consumer group over the streams of a `RedisBus`.

How it reads, claims, lingers and settles, and why, is told in the module docstring of
`firebreak.bus.redis`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from firebreak.bus.base import ConsumerBase, Delivery, is_reply_queue

if TYPE_CHECKING:
    from firebreak.bus.redis import RedisBus

__all__ = ["RedisConsumer", "dead_letter", "text"]

log = logging.getLogger("firebreak.bus.redis")

_OUTAGE_PAUSE = 0.5
"""Seconds between reads while the server is out of reach (redis-py reconnects on the
next command): a worker rides out a restart or a network blip instead of exiting."""
_UNREACHABLE = (RedisConnectionError, RedisTimeoutError, OSError)

_LINGER = 0.002
"""Seconds a consumer that holds messages waits for them to be settled before it reads
again: under load its reads take a batch, not each message as it is published (bench, 4
workers: workers' CPU per step 137-149 -> 110-126 us, Redis reads per step 0.6 -> 0.3-0.4).
An idle consumer reads at once, so one-at-a-time latency is unchanged."""


def text(value: Any) -> str:
    """A reply's bytes (or other value) as a string.

    Bytes that are not UTF-8 (an entry someone else wrote) become U+FFFD rather than an
    error: such a body is then unreadable JSON and dead-lettered, not a crash at every read.
    """
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def dead_letter(queue: str, fields: Mapping[str, str]) -> Delivery:
    """The dead `Delivery` of `queue` whose dead-letter stream entry is `fields`.

    ``b`` body (JSON; ``{}`` if unreadable), ``k`` key, ``id`` the message's id on the
    queue, ``n`` its deliveries, ``reason`` why it died.
    """
    try:
        body = json.loads(fields.get("b", "{}"))
    except ValueError:
        body = {}
    return Delivery(
        queue=queue,
        id=fields.get("id", ""),
        key=fields.get("k", ""),
        body=body if isinstance(body, dict) else {},
        deliveries=int(fields.get("n", "0")),
        dead=True,
        reason=fields.get("reason", ""),
    )


class RedisConsumer(ConsumerBase["RedisBus"]):
    """A member of a consumer group over one or more streams of a `RedisBus`."""

    def __init__(
        self, bus: RedisBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        super().__init__(bus, queues, group=group, name=name, limit=limit)
        self._held: set[tuple[str, str]] = set()
        self._buffer: deque[Delivery] = deque()
        self._ready = False
        self._cursors = dict.fromkeys(queues, "0-0")
        self._exact = 0  # the next reads count in all, not per stream (see `_read`); its turn
        self._next_claim = 0.0
        self._slot = asyncio.Event()
        visibility = bus.policy.visibility
        self._claim_every = min(visibility / 4, 1.0)
        self._replies = [q for q in queues if is_reply_queue(q)]  # streams that expire
        self._keep_at = 0.0  # when to renew their time to live
        self._down = False  # the server was out of reach at the last read

    @property
    def in_flight(self) -> int:
        """Messages delivered to this consumer and not yet settled."""
        return len(self._held)

    async def _ensure_groups(self) -> None:
        if not self._ready:
            for queue in self.queues:
                try:
                    await self.bus.client.xgroup_create(
                        self.bus.stream(queue), self.group, id="0", mkstream=True
                    )
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._ready = True
            self._keep_at = 0.0
        if self._replies and time.monotonic() >= self._keep_at:
            # Reply streams expire unless read (see `firebreak.bus.redis`): renewed four
            # times per time to live, so a slow turn or two cannot let one lapse.
            self._keep_at = time.monotonic() + self.bus.reply_ttl / 4
            await self.bus.keep(self._replies)

    @contextlib.asynccontextmanager
    async def _regrouping(self) -> AsyncIterator[None]:
        """Around a read: NOGROUP (its stream expired or was deleted) makes them again.

        The read then reads nothing; any other error goes up.
        """
        try:
            yield
        except ResponseError as exc:
            # UNBLOCKED: the stream was deleted while a read waited on it.
            if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
                raise
            self._ready = False
            await self._ensure_groups()

    async def get(self, wait: float) -> Delivery | None:
        """The next message: a buffered one, an abandoned one, else a new one.

        ``None`` also while the server is out of reach (said once in the log, and again
        when it is back): the caller reads again, as after an empty wait.
        """
        try:
            delivery = await self._get(wait)
        except _UNREACHABLE as exc:
            if not self._down:
                self._down = True
                log.warning("redis bus %s: %s; reading again until it answers", self.bus, exc)
            self._ready = False  # a restarted server may have lost the groups
            await asyncio.sleep(min(max(wait, 0.0), _OUTAGE_PAUSE))
            return None
        if self._down:
            self._down = False
            log.warning("redis bus %s: reachable again", self.bus)
        return delivery

    async def _get(self, wait: float) -> Delivery | None:
        await self._ensure_groups()
        end = time.monotonic() + wait
        while True:
            if self._buffer:
                return self._buffer.popleft()
            free = self.limit - len(self._held)
            left = end - time.monotonic()
            if free <= 0:
                if left <= 0:
                    return None
                self._slot.clear()
                try:
                    async with asyncio.timeout(left):
                        await self._slot.wait()
                except TimeoutError:
                    return None
                continue
            if time.monotonic() >= self._next_claim:
                self._next_claim = time.monotonic() + self._claim_every
                filled = False
                async with self._regrouping():
                    filled = await self._claim(free)
                if filled:  # it filled the room: more may be waiting
                    self._next_claim = 0.0
                if self._buffer:
                    continue
                free = self.limit - len(self._held)
                if free <= 0:
                    continue
            if self._held:
                # Busy: what is published while the held work ends gathers for one read
                # (up to the bus's `linger`), not a read for each message or two.
                await self._linger(min(_LINGER, left))
                free = self.limit - len(self._held)
                left = end - time.monotonic()
            block = max(min(left, self._claim_every), 0.001)
            async with self._regrouping():
                await self._read(free, block)
            if not self._buffer and time.monotonic() >= end:
                return None

    async def _linger(self, seconds: float) -> None:
        """Wait until this consumer holds nothing, or `seconds`."""
        deadline = time.monotonic() + seconds
        while self._held and (rest := deadline - time.monotonic()) > 0:
            self._slot.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(rest):
                    await self._slot.wait()

    async def _read(self, count: int, block: float) -> None:
        """Up to `count` new messages, waiting up to `block` seconds for the first.

        After a read that brought more than there was room for (a backlog on several
        queues), reads take no more than the room, in all (a script, the queues in turn),
        until one finds less than that; then they block again.
        """
        reply = None
        if self._exact:
            turn = self._exact % len(self.queues)
            queues = self.queues[turn:] + self.queues[:turn]
            reply = await self.bus.read(queues, self.group, self.name, count)
            full = sum(len(entries) for _, entries in reply) >= count
            self._exact = self._exact + 1 if full else 0
        if not reply:
            streams = {self.bus.stream(q): ">" for q in self.queues}
            reply = await self.bus.client.xreadgroup(
                self.group, self.name, streams, count=count, block=max(int(block * 1000), 1)
            )
        by_stream = {self.bus.stream(q): q for q in self.queues}
        got = 0
        extra: list[tuple[str, str]] = []
        for stream, entries in reply or []:
            queue = by_stream[text(stream)]
            for message_id, fields in entries:
                if got >= count:  # COUNT is per stream: several streams gave more in all
                    extra.append((queue, text(message_id)))
                elif await self._accept(queue, text(message_id), fields, 1):
                    got += 1
        if extra:
            self._exact = 1
            # Handed back at once, as if idle past the visibility timeout (their count
            # back to none): the next ``XAUTOCLAIM`` takes them, ours as soon as a slot frees.
            idle = int(self.bus.policy.visibility * 1000) + 1000
            await asyncio.gather(
                *(
                    self.bus.claim_own(queue, self.group, self.name, [i, "release", idle, 0])
                    for queue, i in extra
                )
            )
            self._next_claim = 0.0

    async def _claim(self, count: int) -> bool:
        """Take over at most `count` messages idle past the visibility timeout; whether it did.

        One ``XAUTOCLAIM`` per queue, from where the last one of that queue stopped.
        """
        client = self.bus.client
        idle = int(self.bus.policy.visibility * 1000)
        for queue in self.queues:
            if count <= 0:
                return True
            stream = self.bus.stream(queue)
            reply = await client.xautoclaim(
                stream, self.group, self.name, idle, start_id=self._cursors[queue], count=count
            )
            self._cursors[queue] = text(reply[0])
            claimed = [(text(raw_id), fields) for raw_id, fields in reply[1]]
            if not claimed:
                continue
            # Their delivery counts, in one read (the range may also hold what we held).
            pending = await client.xpending_range(
                stream,
                self.group,
                claimed[0][0],
                claimed[-1][0],
                len(claimed) + len(self._held),
                self.name,
            )
            times = {text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            for message_id, fields in claimed:
                if await self._accept(queue, message_id, fields, times.get(message_id, 1)):
                    count -= 1
        return count <= 0

    async def _accept(
        self, queue: str, message_id: str, raw: Mapping[Any, Any] | None, deliveries: int
    ) -> bool:
        """Buffer a delivery (or dead-letter it); whether it now counts as held."""
        fields = {text(k): text(v) for k, v in (raw or {}).items()}
        key = fields.get("k", "")
        policy = self.bus.policy
        reason = ""
        body: Any = None
        if deliveries > policy.max_deliveries:
            reason = f"delivered {deliveries} times (max {policy.max_deliveries})"
        else:
            try:
                body = json.loads(fields.get("b", ""))
            except ValueError:
                body = None
            if not isinstance(body, dict):
                reason = "unreadable body"
        if reason:
            dead = {**fields, "id": message_id, "n": str(deliveries), "reason": reason}
            await self.bus.kill(queue, message_id, self.group, dead)
            self._buffer.append(dead_letter(queue, dead))
            return False
        self._held.add((queue, message_id))
        self._buffer.append(
            Delivery(queue=queue, id=message_id, key=key, body=body, deliveries=deliveries)
        )
        return True

    def _free(self, delivery: Delivery) -> None:
        self._held.discard((delivery.queue, delivery.id))
        self._slot.set()

    async def ack(self, delivery: Delivery) -> None:
        """``XACK`` and ``XDEL`` atomically (one script, one round trip)."""
        await self.bus.settle(delivery.queue, self.group, delivery.id)
        self._free(delivery)

    async def ack_many(self, deliveries: Sequence[Delivery]) -> None:
        """`ack` several deliveries at once: one script per queue, in one round trip."""
        ids: dict[str, list[str]] = {}
        for delivery in deliveries:
            ids.setdefault(delivery.queue, []).append(delivery.id)
        await asyncio.gather(
            *(self.bus.settle_many(queue, self.group, batch) for queue, batch in ids.items())
        )
        for delivery in deliveries:
            self._free(delivery)

    async def reply_and_ack(
        self, delivery: Delivery, queue: str, body: Mapping[str, Any], *, key: str
    ) -> None:
        """``publish(queue, body, key=key)`` then `ack` (delivery), in one round trip.

        The reply is added first; if the script fails before the ack, nothing is acked
        (the caller may fall back to a separate publish and ack).
        """
        await self.bus.settle(delivery.queue, self.group, delivery.id, (queue, body, key))
        self._free(delivery)

    async def reply_and_ack_in(
        self,
        delivery: Delivery,
        queue: str,
        body: Mapping[str, Any],
        *,
        key: str,
        write: Callable[[list[list[str]]], Awaitable[bool]],
    ) -> bool:
        """`reply_and_ack`, its commands run by `write`; whether it ran them.

        `write` is another client's write on this bus's server: a `RedisStore`'s
        `commit_step_then`, so a worker's commit, reply and ack are one script and one
        round trip. If `write` ran nothing (returned ``False``: a duplicate commit), the
        delivery is still held; settle it as usual.
        """
        stream = self.bus.stream(delivery.queue)
        encoded = json.dumps(body, separators=(",", ":"), allow_nan=False)
        reply_stream = self.bus.stream(queue)
        done = await write(
            [
                ["XADD", reply_stream, "*", "b", encoded, "k", key],
                ["PEXPIRE", reply_stream, self.bus.reply_ms],
                ["XACK", stream, self.group, delivery.id],
                ["XDEL", stream, delivery.id],
            ]
        )
        if done:
            self._free(delivery)
        return done

    async def release(self, delivery: Delivery) -> None:
        """Mark it long idle, its count back by one, so the next ``XAUTOCLAIM`` takes it."""
        idle = int(self.bus.policy.visibility * 1000) + 1000
        retry = max(delivery.deliveries - 1, 0)
        await self.bus.claim_own(
            delivery.queue, self.group, self.name, [delivery.id, "release", idle, retry]
        )
        self._free(delivery)

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Move it to the dead-letter stream now."""
        fields = {
            "b": json.dumps(delivery.body, separators=(",", ":")),
            "k": delivery.key,
            "id": delivery.id,
            "n": str(delivery.deliveries),
            "reason": reason,
        }
        await self.bus.kill(delivery.queue, delivery.id, self.group, fields)
        self._free(delivery)

    async def touch(self, delivery: Delivery) -> None:
        """Reset its idle time, if this consumer still owns it."""
        await self.bus.claim_own(delivery.queue, self.group, self.name, [delivery.id, "touch"])

    async def close(self) -> None:
        """Stop; hand back buffered messages not yet handed out."""
        while self._buffer:
            delivery = self._buffer.popleft()
            if not delivery.dead:
                await self.release(delivery)
        self._held.clear()
