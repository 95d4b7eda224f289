"""`KafkaConsumer`: a member of a Kafka consumer group, handing records out as deliveries.

How the `TaskBus` contract maps onto offsets and rebalances is told in the module
docstring of `firebreak.bus.kafka`; group membership itself (joining, the assignor) is
`firebreak.bus._kafka_group`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

from firebreak.bus._kafka_group import join
from firebreak.bus._kafka_handouts import commit, log_handout, log_of, log_settled, take_over
from firebreak.bus._kafka_records import COUNT, DUE, ID, header, json_object, key_of, tp_of
from firebreak.bus.base import ConsumerBase, Delivery

if TYPE_CHECKING:
    from firebreak.bus.kafka import KafkaBus

__all__ = ["KafkaConsumer"]

log = logging.getLogger("firebreak.bus.kafka")


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    tp: TopicPartition
    offset: int
    body: bytes
    expires: float
    orphaned: bool = False


@dataclass(slots=True)
class _Partition:
    held: dict[int, _Held] = field(default_factory=dict)
    next: int | None = None  # the offset after the last one taken from it
    handouts: dict[int, int] = field(default_factory=dict)  # by earlier owners (the log)
    logged: dict[int, int] = field(default_factory=dict)  # offset -> its first log offset
    log_end: int = 0  # the log offset after the last entry known
    committed: tuple[int, int] | None = None  # (offset, log position) last committed
    owned: bool = True  # False between a revocation and the assignment that returns it


class KafkaConsumer(ConsumerBase["KafkaBus"]):
    """A member of a Kafka consumer group over the topics of one or more queues."""

    def __init__(
        self, bus: KafkaBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        super().__init__(bus, queues, group=group, name=name, limit=limit)
        self.waiting = False
        """Whether a `get` is waiting now (the assignor gives partitions to such members)."""
        self._queue_of: dict[str, str] = {}
        self._retry: set[str] = set()
        for queue in queues:
            self._queue_of[bus.topic(queue)] = queue
            self._queue_of[bus.topic(queue, "retry")] = queue
            self._retry.add(bus.topic(queue, "retry"))
        self._kafka: AIOKafkaConsumer | None = None
        self._parts: dict[TopicPartition, _Partition] = {}
        self._held: dict[tuple[str, str], _Held] = {}
        self._buffer: deque[Any] = deque()
        self._paused: dict[TopicPartition, float] = {}  # retry partitions waiting: until
        self._joined = asyncio.Event()
        self._changed = asyncio.Event()
        self._closed = False
        self._revoking = False
        self._start_task: asyncio.Task[None] | None = None
        self._reaper: asyncio.Task[None] | None = None
        with contextlib.suppress(RuntimeError):  # no running loop: the first get starts it
            self._start_task = asyncio.get_running_loop().create_task(self._start())

    @property
    def in_flight(self) -> int:
        """Messages handed out and not yet settled."""
        return len(self._held)

    def holding(self) -> list[tuple[str, int]]:
        """The partitions this member keeps at a join: those it holds messages of.

        Also those it held messages of when they were revoked and has settled since: their
        commit waits for the assignment, so another owner would start before the settling.
        """
        tps = {h.tp for h in self._held.values() if not h.orphaned}
        tps.update(tp for tp, part in self._parts.items() if not part.owned)
        return sorted((tp.topic, tp.partition) for tp in tps)

    async def _start(self) -> None:
        await self.bus.ensure(self.queues)
        self._kafka = await join(
            self.bus, self, group=self.group, name=self.name, topics=self._queue_of
        )
        self._reaper = asyncio.get_running_loop().create_task(self._reap())

    async def _ensure_started(self) -> AIOKafkaConsumer:
        if self._start_task is None:
            self._start_task = asyncio.get_running_loop().create_task(self._start())
        await asyncio.shield(self._start_task)
        if self._kafka is None:  # pragma: no cover - _start sets it or raises
            raise RuntimeError("consumer not started")
        return self._kafka

    # -- rebalance ------------------------------------------------------------------

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """Commit `revoked` and stop taking from them; keep the state of those still held.

        A partition of which messages are still held is reported as held at the join
        (`holding`), so the assignor gives it back to this member; its held messages stay
        live meanwhile. The rest is forgotten: a new owner starts at the committed offset.
        """
        self._revoking = True
        try:
            self._buffer = deque(r for r in self._buffer if tp_of(r) not in revoked)
            for tp in revoked:
                self._paused.pop(tp, None)
            held = {h.tp for h in self._held.values() if not h.orphaned}
            await self._commit(*[tp for tp in revoked if tp in self._parts])
            held.update(h.tp for h in self._held.values() if not h.orphaned)
            for tp in revoked:
                part = self._parts.get(tp)
                if part is None:
                    continue
                if tp in held:
                    part.owned = False
                else:
                    del self._parts[tp]
        finally:
            self._revoking = False

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """Take `assigned` over: resume a partition kept, start a new one at its commit.

        Messages held of a partition that went to another member are orphaned (the new
        owner re-consumes them; a late `ack` is a no-op). A new partition gets the
        hand-out counts of its earlier owners from its hand-out log.
        """
        kafka = self._kafka
        for tp in [tp for tp in self._parts if tp not in assigned]:
            for held in self._parts.pop(tp).held.values():
                held.orphaned = True
        self._buffer = deque(r for r in self._buffer if tp_of(r) in assigned)
        kept: list[TopicPartition] = []
        new: list[TopicPartition] = []
        for tp in sorted(assigned):
            part = self._parts.get(tp)
            if part is None:
                self._parts[tp] = _Partition()
                new.append(tp)
                continue
            part.owned = True
            part.committed = None  # commit it again under this generation
            kept.append(tp)
            if part.next is not None and kafka is not None:
                kafka.seek(tp, part.next)  # not from the commit: those are held or done
        if new and kafka is not None:
            try:
                found = await take_over(self.bus, kafka, self.bus.group_id(self.group), new)
            except (KafkaError, OSError) as exc:  # counts are best effort
                log.warning("could not read the hand-out logs of %s: %s", new, exc)
                found = {}
            for tp, takeover in found.items():
                if (part := self._parts.get(tp)) is None:
                    continue
                part.handouts, part.logged = takeover.counts, takeover.first
                part.log_end = takeover.end
        await self._commit(*kept)
        self._joined.set()
        self._changed.set()

    # -- offsets ----------------------------------------------------------------------

    def _position(self, part: _Partition) -> tuple[int, int] | None:
        """The offset to commit (the lowest held, else the next), and its log position."""
        live = [o for o, h in part.held.items() if not h.orphaned]
        offset = min(live) if live else part.next
        if offset is None:
            return None
        firsts = [j for o, j in part.logged.items() if o >= offset]
        return offset, min(firsts, default=part.log_end)

    async def _commit(self, *tps: TopicPartition) -> None:
        kafka = self._kafka
        if kafka is None:
            return
        offsets: dict[TopicPartition, OffsetAndMetadata] = {}
        for tp in tps:
            part = self._parts.get(tp)
            if part is None or not part.owned:
                continue  # committed again when it is assigned back
            position = self._position(part)
            if position is None or (part.committed or (None,))[0] == position[0]:
                continue  # the log position alone need not move: a lower one is safe
            offsets[tp] = OffsetAndMetadata(position[0], "")
            offsets[log_of(tp)] = OffsetAndMetadata(position[1], "")
            part.committed = position
            part.logged = {o: j for o, j in part.logged.items() if o >= position[0]}
        if not offsets:
            return
        try:
            await commit(kafka, offsets)
        except (KafkaError, OSError) as exc:
            # A rebalance is under way: a partition kept commits again when assigned back.
            log.debug("commit failed (%s); left to the rebalance", exc)
            for tp in offsets:
                if (part := self._parts.get(tp)) is not None:
                    part.committed = None  # (a log partition is not one: skipped)

    # -- getting ----------------------------------------------------------------------

    async def get(self, wait: float) -> Delivery | None:
        """The next message; the first call also waits for the group join (see module)."""
        kafka = await self._ensure_started()
        self.waiting = True
        try:
            if not self._joined.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.bus.join_timeout):
                        await self._joined.wait()
            end = time.monotonic() + wait
            while not self._closed:
                self._resume_due(kafka)
                while len(self._held) < self.limit and (record := self._next_ready(kafka)):
                    delivery = await self._hand_out(record)
                    if delivery is not None:
                        return delivery
                left = end - time.monotonic()
                if left <= 0:
                    return None
                free = self.limit - len(self._held)
                if free <= 0:
                    self._changed.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(left):
                            await self._changed.wait()
                    continue
                batch = await kafka.getmany(
                    timeout_ms=max(int(min(left, 0.25) * 1000), 1), max_records=free
                )
                for tp in sorted(batch):
                    if (part := self._parts.get(tp)) is not None and part.owned:
                        self._buffer.extend(batch[tp])
            return None
        finally:
            self.waiting = False

    def _next_ready(self, kafka: AIOKafkaConsumer) -> Any | None:
        """The first buffered record that is due; a partition whose head is not waits."""
        now = time.time()
        blocked: set[TopicPartition] = set()
        # New work first, then what came back through the retry topics.
        order = sorted(range(len(self._buffer)), key=lambda i: self._buffer[i].topic in self._retry)
        for index in order:
            record = self._buffer[index]
            tp = tp_of(record)
            if tp in blocked:
                continue
            due = float(header(record.headers, DUE, "0") or 0)
            if due > now:
                blocked.add(tp)
                if tp not in self._paused and tp in self._parts:
                    kafka.pause(tp)  # fetch no further behind it
                self._paused[tp] = due
                continue
            del self._buffer[index]
            return record
        return None

    def _resume_due(self, kafka: AIOKafkaConsumer) -> None:
        now = time.time()
        for tp, due in list(self._paused.items()):
            if due <= now:
                del self._paused[tp]
                if tp in self._parts:
                    kafka.resume(tp)

    async def _hand_out(self, record: Any) -> Delivery | None:
        """Turn a fetched record into a delivery (or a dead letter); None if stale."""
        tp = tp_of(record)
        part = self._parts.get(tp)
        if part is None or not part.owned or (part.next is not None and record.offset < part.next):
            return None  # revoked meanwhile (fetched again if it comes back), or fetched twice
        queue = self._queue_of[record.topic]
        message_id = header(record.headers, ID) or f"{tp.topic}:{tp.partition}:{record.offset}"
        key = key_of(record)
        handouts = part.handouts.pop(record.offset, 0) + 1
        deliveries = int(header(record.headers, COUNT, "0")) + handouts
        part.next = record.offset + 1
        body = json_object(record.value)
        policy = self.bus.policy
        reason = ""
        if deliveries > policy.max_deliveries:
            reason = f"delivered {deliveries} times (max {policy.max_deliveries})"
        elif body is None:
            reason = "unreadable body"
        if reason:
            dead = Delivery(
                queue=queue,
                id=message_id,
                key=key,
                body=body or {},
                deliveries=deliveries,
                dead=True,
                reason=reason,
            )
            await self._forward(dead, record.value or b"", "dead", count=deliveries, reason=reason)
            await self._commit(tp)
            return dead
        assert body is not None  # noqa: S101 - narrowed above
        # Logged before the work starts: should this process die, the next owner counts it.
        await self._log(part, tp, record.offset, settled=False)
        delivery = Delivery(queue=queue, id=message_id, key=key, body=body, deliveries=deliveries)
        held = _Held(
            delivery=delivery,
            tp=tp,
            offset=record.offset,
            body=record.value or b"",
            expires=time.monotonic() + policy.visibility,
        )
        part.held[record.offset] = held
        self._held[(queue, message_id)] = held
        await self._commit(tp)  # commits only if the committed offset moves
        return delivery

    async def _log(
        self, part: _Partition, tp: TopicPartition, offset: int, *, settled: bool
    ) -> None:
        """Log a hand-out (or an early settle) of `offset`; counts are best effort."""
        write = log_settled if settled else log_handout
        try:
            logged = await write(self.bus, self.bus.group_id(self.group), tp, offset)
        except (KafkaError, OSError) as exc:
            what = "settle" if settled else "hand-out"
            log.warning("could not log the %s of %s:%s: %s", what, tp, offset, exc)
            return
        if not settled:
            part.logged.setdefault(offset, logged)
        part.log_end = max(part.log_end, logged + 1)

    # -- settling ---------------------------------------------------------------------

    def _take(self, delivery: Delivery) -> _Held | None:
        return self._held.get((delivery.queue, delivery.id))

    async def _settle(self, held: _Held) -> None:
        self._held.pop((held.delivery.queue, held.delivery.id), None)
        part = self._parts.get(held.tp)
        if part is not None and part.held.get(held.offset) is held:
            del part.held[held.offset]
            below = [o for o, h in part.held.items() if o < held.offset and not h.orphaned]
            if below and not held.orphaned:
                # The commit cannot pass it yet: a new owner would count its hand-outs.
                await self._log(part, held.tp, held.offset, settled=True)
        self._changed.set()
        if not held.orphaned and not self._revoking:
            await self._commit(held.tp)

    async def ack(self, delivery: Delivery) -> None:
        """Settle it: the committed offset may move past it."""
        held = self._take(delivery)
        if held is not None:
            await self._settle(held)

    async def release(self, delivery: Delivery) -> None:
        """Re-publish it to the retry topic, its count unchanged, and settle it."""
        held = self._take(delivery)
        if held is None:
            return
        if not held.orphaned:
            await self._republish(held, counted=False)
        await self._settle(held)

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Produce it to the dead-letter topic with `reason`, and settle it."""
        held = self._take(delivery)
        if held is None:
            return
        if not held.orphaned:
            await self._forward(
                delivery, held.body, "dead", count=delivery.deliveries, reason=reason
            )
        await self._settle(held)

    async def touch(self, delivery: Delivery) -> None:
        """Restart its visibility timer (local only: the group heartbeat is the liveness)."""
        held = self._take(delivery)
        if held is not None:
            held.expires = time.monotonic() + self.bus.policy.visibility
            self._changed.set()

    async def _republish(self, held: _Held, *, counted: bool, due: float = 0.0) -> None:
        delivery = held.delivery
        count = delivery.deliveries if counted else delivery.deliveries - 1
        await self._forward(delivery, held.body, "retry", count=count, due=due)

    async def _forward(
        self,
        delivery: Delivery,
        body: bytes,
        kind: str,
        *,
        count: int,
        reason: str = "",
        due: float = 0.0,
    ) -> None:
        """Produce `body` as `delivery` to its queue's `kind` topic (``retry``, ``dead``)."""
        await self.bus.send(
            self.bus.topic(delivery.queue, kind),
            body,
            key=delivery.key,
            message_id=delivery.id,
            count=count,
            reason=reason,
            due=due,
        )

    def _expire(self) -> None:
        now = time.monotonic()
        for held in self._held.values():
            if not held.orphaned and held.expires <= now:
                held.expires = float("-inf")  # marked: abandon it

    async def _flush_abandoned(self, due: float = 0.0) -> None:
        for held in [h for h in self._held.values() if h.expires == float("-inf")]:
            if not held.orphaned:
                await self._republish(held, counted=True, due=due)
            log.warning(
                "task %s passed its visibility timeout without a touch; handed to the group",
                held.delivery.id,
            )
            await self._settle(held)

    async def _reap(self) -> None:
        every = min(self.bus.policy.visibility / 4, 0.5)
        while True:
            await asyncio.sleep(every)
            try:
                self._expire()
                await self._flush_abandoned()
            except (KafkaError, OSError) as exc:  # the next round may work
                log.warning("could not hand back expired tasks: %s", exc)

    async def close(self) -> None:
        """Abandon what is still held (counted), commit, and leave the group."""
        if self._closed:
            return
        self._closed = True
        self._changed.set()
        task = self._start_task
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        reaper, self._reaper = self._reaper, None
        if reaper is not None:
            reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reaper
        kafka, self._kafka = self._kafka, None
        if kafka is None:
            return
        try:
            for held in list(self._held.values()):
                held.expires = float("-inf")
            self._kafka = kafka
            with contextlib.suppress(KafkaError, OSError):
                # as if it had died holding them: back after the visibility timeout
                await self._flush_abandoned(due=time.time() + self.bus.policy.visibility)
            self._buffer.clear()
            with contextlib.suppress(KafkaError, OSError):
                await self._commit(*self._parts)
        finally:
            self._kafka = None
            self._held.clear()
            await kafka.stop()
