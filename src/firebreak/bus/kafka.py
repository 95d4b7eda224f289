"""`KafkaBus`: a `TaskBus` on the Kafka protocol via aiokafka (``kafka://``, extra ``kafka``).

Kafka has no per-message acknowledgement, lease or visibility timeout: a consumer group
owns *partitions*, and a member's progress is one committed offset per partition. This
backend maps the `TaskBus` contract onto that as follows.

Topics (created on first use; ``<prefix>`` from the URL):

- ``<prefix>.<queue>`` — the tasks, keyed by the message ``key`` (firebreak: the run id),
  so one run's tasks share a partition and keep their order;
- ``<prefix>.<queue>.retry`` — messages handed back (`release`) or abandoned (their
  holder let the visibility timeout pass, or closed while holding them), re-published
  with their delivery count in the ``fb-n`` header;
- ``<prefix>.<queue>.dead`` — the dead letters (`reject`, unreadable bodies, and
  messages past ``max_deliveries``), with ``fb-reason``.

Every message carries a stable id (header ``fb-id``), the same on every redelivery.

Consumers and offsets:

- A consumer joins the Kafka consumer group ``<prefix>.<group>`` over the task and retry
  topics of its queues and commits offsets by hand (auto-commit is off). The committed
  offset of a partition is the **lowest offset handed out and not yet settled** (acked,
  released, rejected or abandoned), so nothing handed out is ever skipped by a crash.
- **A dead process** (SIGKILL, lost host) stops heart-beating; after the session timeout
  the group rebalances and the new owner re-consumes every uncommitted offset: that is
  the redelivery. Each hand-out is first recorded in the commit's metadata (offset →
  hand-outs), so the new owner counts it. Brokers that drop commit metadata (Tansu does)
  do not count such crash redeliveries: there a task that kills every worker it reaches
  is redelivered without end instead of being dead-lettered.
- **A live holder that lets the visibility timeout pass** (a hung step) abandons the
  message itself: a background timer re-publishes it to the retry topic with its count
  (so another member picks it up) and settles the original. A late `ack` of it is a
  no-op: the copy is another consumer's now. `touch` restarts that timer; it sends
  nothing to the broker, because liveness is the group heartbeat (aiokafka sends it in
  the background), not the message.
- **A rebalance** (a member joins or leaves) does not move a message that is being worked
  on: a member reports at the join the partitions of which it holds unsettled messages
  (`holding`), and the assignor gives each back to it (it is alive: it rejoined). So a live holder
  keeps its messages until it settles them or its visibility timer abandons them (to the
  retry topic, which may now be another member's), and `touch` keeps them for as long as
  it is called. The revoking member commits and drops its fetched-but-not-handed-out
  records; a kept partition resumes after its last hand-out. Should a held partition go
  to another member all the same (the holder was dropped from the group), its held
  messages are orphaned: the new owner re-consumes them and a late `ack` is a no-op.
- The other partitions go round-robin to the members waiting in `get` at the time of the
  join when there are any (a member at ``max_in_flight``, or one that no longer polls,
  takes none); otherwise to all members.
- `release` re-publishes to the retry topic with the count unchanged and settles the
  original; `close` abandons what is still held (counted, due back after the visibility
  timeout) and leaves the group.

Where this differs from Redis Streams (and RabbitMQ):

- **Joining a group is slow**: every join or rebalance takes the broker's join delay
  (Tansu: a second per JoinGroup, and a second more for a member whose SyncGroup comes
  before the leader's, so about two seconds to join a group that has members; Apache
  Kafka: ``group.initial.rebalance.delay.ms``), and all members pause meanwhile. The
  first `get` of a consumer therefore waits for its join (up to ``join_timeout``
  seconds) before its own ``wait`` starts.
- A dead *process* is noticed after the **session timeout**, not the visibility timeout.
- A released or abandoned message goes to the **back** of the retry topic: it keeps
  no order relative to newer messages of its key (firebreak publishes a run's next
  tasks only after the previous ones are committed, so runs are unaffected).
- Abandoned messages come back as soon as their holder notices (its timer) or closes,
  not exactly at the visibility timeout.
- ``partitions`` (default 1) bounds how many members consume a queue at once; order
  holds per partition, i.e. per key when ``partitions > 1``.

This backend was developed and tested against **Tansu**, a Kafka-compatible broker; it
is not Apache Kafka. Tansu's known gaps: the idempotent producer fails (this backend
does not use it), offset-commit metadata is not stored (see above), and generations
are numbered from 0, in which aiokafka would not leave the group on close (this
backend makes it leave).

URL: ``kafka://host:port[,host:port...][?prefix=..&visibility_timeout=..&max_deliveries=..
&partitions=..&session_timeout=..&heartbeat_interval=..&rebalance_timeout=..
&join_timeout=..&fetch_max_wait=..]`` (durations in seconds).

``fetch_max_wait`` (default 0.5 s, aiokafka's) bounds how long the broker may hold a fetch
that finds nothing. Apache Kafka answers a held fetch as soon as a record arrives, so the
default costs no latency there; Tansu answers only when the wait ends, so each hop waits
about half of it: with Tansu use a small value (0.01 s: one run at a time, ~250 ms a step
becomes ~10 ms; the price is an idle consumer's hundred fetches a second).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.coordinator.protocol import (  # type: ignore[import-untyped]
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]
from aiokafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

from firebreak._lifecycle import SetupClose
from firebreak.bus.base import BusPolicy, Delivery, check_consumer

__all__ = ["KafkaBus", "KafkaConsumer", "from_url"]

log = logging.getLogger(__name__)

_FLOATS = (
    "session_timeout",
    "heartbeat_interval",
    "rebalance_timeout",
    "join_timeout",
    "fetch_max_wait",
)
_OPTIONS = frozenset({"prefix", "visibility_timeout", "max_deliveries", "partitions", *_FLOATS})
_TOPIC_CHARS = re.compile(r"[^A-Za-z0-9._-]")
_ID, _COUNT, _REASON, _DUE = "fb-id", "fb-n", "fb-reason", "fb-due"


def from_url(url: str, *, policy: BusPolicy | None = None) -> KafkaBus:
    """Build (not connect) a bus from a ``kafka://`` URL; see the module docstring."""
    parts = urlsplit(url)
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - _OPTIONS)
    if unknown:
        raise ValueError(f"bus URL {url!r}: unknown option(s) {', '.join(unknown)}")
    servers = parts.netloc.rpartition("@")[2] or "127.0.0.1:9092"
    try:
        if policy is None:
            policy = BusPolicy(
                visibility_timeout=float(options.get("visibility_timeout", 30.0)),
                max_deliveries=int(options.get("max_deliveries", 5)),
            )
        extra = {name: float(options[name]) for name in _FLOATS if name in options}
        return KafkaBus(
            servers,
            prefix=options.get("prefix", "firebreak"),
            policy=policy,
            partitions=int(options.get("partitions", 1)),
            **extra,
        )
    except ValueError as exc:
        raise ValueError(f"bus URL {url!r}: {exc}") from None


def _header(headers: Iterable[tuple[str, bytes]] | None, name: str, default: str = "") -> str:
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return default


def _json_object(raw: bytes | None) -> dict[str, Any] | None:
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class KafkaBus(SetupClose):
    """A `TaskBus` on a Kafka-protocol broker; build with ``open_bus("kafka://…")``.

    Example:
        >>> async with KafkaBus("127.0.0.1:9092", prefix="billing") as bus:
        ...     await bus.publish("invoice.extract", {"run_id": "inv-42"}, key="inv-42")

    Args:
        servers: bootstrap servers, ``host:port[,host:port...]``.
        prefix: every topic and group name starts with ``<prefix>.``.
        policy: visibility timeout and maximum deliveries.
        partitions: partitions of each topic this bus creates.
        session_timeout: seconds without a heartbeat after which a member is dead.
        heartbeat_interval: seconds between heartbeats (default: a fifth of the session).
        rebalance_timeout: seconds the broker waits for members to rejoin in a rebalance.
        join_timeout: seconds the first `get` of a consumer waits for its group join.
        fetch_max_wait: seconds the broker may hold a fetch that finds nothing (see the
            module docstring: small for Tansu).
    """

    def __init__(
        self,
        servers: str,
        *,
        prefix: str = "firebreak",
        policy: BusPolicy | None = None,
        partitions: int = 1,
        session_timeout: float = 10.0,
        heartbeat_interval: float | None = None,
        rebalance_timeout: float | None = None,
        join_timeout: float = 30.0,
        fetch_max_wait: float = 0.5,
    ) -> None:
        if partitions < 1:
            raise ValueError(f"partitions must be >= 1, got {partitions}")
        positive = (
            ("session_timeout", session_timeout),
            ("join_timeout", join_timeout),
            ("fetch_max_wait", fetch_max_wait),
        )
        for name, value in positive:
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value!r}")
        self.servers = servers
        self.prefix = prefix
        self.policy = policy or BusPolicy()
        self.partitions = partitions
        self.session_timeout = session_timeout
        self.heartbeat_interval = heartbeat_interval or max(session_timeout / 5, 0.05)
        self.rebalance_timeout = rebalance_timeout or max(
            session_timeout, self.policy.visibility * 2
        )
        self.join_timeout = join_timeout
        self.fetch_max_wait = fetch_max_wait
        self._producer: AIOKafkaProducer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._topics: set[str] = set()
        self._topic_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"KafkaBus(servers={self.servers!r}, prefix={self.prefix!r})"

    @property
    def producer(self) -> AIOKafkaProducer:
        """The shared producer (after `setup`)."""
        if self._producer is None:
            raise RuntimeError("KafkaBus used before setup(); use `async with` or await setup()")
        return self._producer

    async def setup(self) -> None:
        """Connect a producer and an admin client; idempotent."""
        if self._producer is not None:
            return
        admin = AIOKafkaAdminClient(bootstrap_servers=self.servers)
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers, enable_idempotence=False, acks="all", linger_ms=0
        )
        try:
            await admin.start()
            await producer.start()
        except BaseException:
            await producer.stop()
            await admin.close()
            raise
        self._admin, self._producer = admin, producer

    async def close(self) -> None:
        """Close the producer and the admin client; idempotent."""
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            await producer.stop()
        if admin is not None:
            await admin.close()

    def topic(self, queue: str, kind: str = "") -> str:
        """The topic of `queue` (`kind`: ``""``, ``"retry"`` or ``"dead"``)."""
        name = _TOPIC_CHARS.sub("_", f"{self.prefix}.{queue}")
        return f"{name}.{kind}" if kind else name

    def group_id(self, group: str) -> str:
        """The Kafka consumer group of `group`."""
        return f"{self.prefix}.{group}"

    async def ensure(self, queues: Iterable[str]) -> None:
        """Create the task, retry and dead-letter topics of `queues` if missing."""
        wanted = [self.topic(q, k) for q in queues for k in ("", "retry", "dead")]
        async with self._topic_lock:
            missing = [t for t in wanted if t not in self._topics]
            if not missing:
                return
            if self._admin is None:
                raise RuntimeError("KafkaBus used before setup()")
            for name in missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await self._admin.create_topics([NewTopic(name, self.partitions, 1)])
            self._topics.update(missing)

    async def send(
        self,
        topic: str,
        body: bytes,
        *,
        key: str,
        message_id: str,
        count: int,
        reason: str = "",
        due: float = 0.0,
    ) -> None:
        """Produce one record and wait for the broker's acknowledgement."""
        headers = [(_ID, message_id.encode()), (_COUNT, str(count).encode())]
        if reason:
            headers.append((_REASON, reason.encode()))
        if due:
            headers.append((_DUE, repr(due).encode()))
        await self.producer.send_and_wait(topic, body, key=key.encode(), headers=headers)

    async def publish(self, queue: str, body: Mapping[str, Any], *, key: str) -> str:
        """Produce the message to the queue's topic; its id is a new uuid."""
        text = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        await self.ensure([queue])
        message_id = uuid.uuid4().hex
        await self.send(self.topic(queue), text, key=key, message_id=message_id, count=0)
        return message_id

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> KafkaConsumer:
        """A member of `group` over `queues`; it starts joining at once (in a running loop)."""
        return KafkaConsumer(self, list(queues), group=group, name=name, limit=max_in_flight)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """The dead-letter topic of `queue`, oldest first (read without a group)."""
        await self.ensure([queue])
        topic = self.topic(queue, "dead")
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.servers, enable_auto_commit=False, group_id=None
        )
        await reader.start()
        out: list[Delivery] = []
        try:
            partitions = [
                TopicPartition(topic, p) for p in sorted(reader.partitions_for_topic(topic) or ())
            ]
            if not partitions:
                return out
            reader.assign(partitions)
            await reader.seek_to_beginning(*partitions)
            ends = await reader.end_offsets(partitions)
            left = {tp for tp in partitions if ends[tp] > 0}
            records: list[Any] = []
            deadline = time.monotonic() + 10.0
            while left and time.monotonic() < deadline:
                batch = await reader.getmany(*left, timeout_ms=200)
                for tp, items in batch.items():
                    records.extend(items)
                    if items and items[-1].offset + 1 >= ends[tp]:
                        left.discard(tp)
            records.sort(key=lambda r: (r.timestamp, r.partition, r.offset))
            for record in records[:limit]:
                body = _json_object(record.value) or {}
                out.append(
                    Delivery(
                        queue=queue,
                        id=_header(record.headers, _ID),
                        key=(record.key or b"").decode(errors="replace"),
                        body=body,
                        deliveries=int(_header(record.headers, _COUNT, "0")),
                        dead=True,
                        reason=_header(record.headers, _REASON),
                    )
                )
        finally:
            await reader.stop()
        return out

    async def delete(self, queue: str) -> None:
        """Delete the queue's topics (best effort: a broker may refuse)."""
        names = [self.topic(queue, k) for k in ("", "retry", "dead")]
        self._topics.difference_update(names)
        if self._admin is None:
            return
        try:
            await self._admin.delete_topics(names)
        except KafkaError as exc:  # pragma: no cover - depends on the broker
            log.debug("could not delete topics %s: %s", names, exc)


@dataclass(slots=True)
class _Held:
    delivery: Delivery
    tp: TopicPartition
    offset: int
    body: bytes
    handouts: int
    expires: float
    orphaned: bool = False


@dataclass(slots=True)
class _Partition:
    held: dict[int, _Held] = field(default_factory=dict)
    next: int | None = None  # the offset after the last one taken from it
    handouts: dict[int, int] = field(default_factory=dict)  # from commit metadata
    committed: tuple[int, str] | None = None
    owned: bool = True  # False between a revocation and the assignment that returns it


class _ActiveAssignor:
    """Holders keep their partitions; the rest round-robin over the members waiting in `get`.

    A member that holds unsettled messages of a partition keeps it (it is alive: it
    rejoined), so a rebalance never hands a message that is still being worked on to
    another member; its visibility timer is what abandons it. Other partitions go
    round-robin to the members waiting in `get` at the join (to all, if none is).
    """

    name = "firebreak-active"
    version = 0

    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        data = {"active": self.consumer.waiting, "holding": self.consumer.holding()}
        return ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), json.dumps(data).encode()
        )

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        def data(meta: ConsumerProtocolMemberMetadata) -> dict[str, Any]:
            return _json_object(getattr(meta, "user_data", b"")) or {}

        eligible = sorted(m for m, meta in members.items() if data(meta).get("active"))
        eligible = eligible or sorted(members)
        holder: dict[tuple[str, int], str] = {}
        for member in sorted(members):
            for topic, partition in data(members[member]).get("holding") or ():
                holder.setdefault((str(topic), int(partition)), member)
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        chosen: dict[str, dict[str, list[int]]] = {m: {} for m in members}
        turn = 0
        for topic in topics:
            takers = [m for m in eligible if topic in members[m].subscription] or [
                m for m in sorted(members) if topic in members[m].subscription
            ]
            for partition in sorted(cluster.partitions_for_topic(topic) or ()):
                if (owner := holder.get((topic, partition))) is not None:
                    chosen[owner].setdefault(topic, []).append(partition)
                    continue
                member = takers[turn % len(takers)]
                turn += 1
                chosen[member].setdefault(topic, []).append(partition)
        return {
            m: ConsumerProtocolMemberAssignment(self.version, sorted(parts.items()), b"")
            for m, parts in chosen.items()
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        """Nothing to remember."""


def _leave_at_generation_zero(kafka: AIOKafkaConsumer) -> None:
    """Make `kafka` leave its group on `stop` in generation 0 too.

    aiokafka sends LeaveGroup only when the generation is above 0, the first one on
    Apache Kafka; Tansu numbers generations from 0, so the first member of a group never
    left it, and the next rebalance waited out its session timeout. The coordinator
    calls this once its heartbeat and coordination have stopped, so raising the number
    it no longer uses is harmless; the request itself carries only the member id.
    """
    coordinator = getattr(kafka, "_coordinator", None)
    leave = getattr(coordinator, "_maybe_leave_group", None)
    if coordinator is None or leave is None:  # pragma: no cover - another aiokafka
        return

    async def leave_any_generation() -> None:
        if coordinator.generation == 0 and coordinator.member_id:
            coordinator.generation = 1
        await leave()

    coordinator._maybe_leave_group = leave_any_generation  # noqa: SLF001 - see above


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: KafkaConsumer) -> None:
        self.consumer = consumer

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.consumer.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.consumer.assigned(set(assigned))


class KafkaConsumer:
    """A member of a Kafka consumer group over the topics of one or more queues."""

    def __init__(
        self, bus: KafkaBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        check_consumer(queues, limit)
        self.bus = bus
        self.queues = queues
        self.group = group
        self.name = name
        self.limit = limit
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
        bus = self.bus
        await bus.ensure(self.queues)
        kafka = AIOKafkaConsumer(
            bootstrap_servers=bus.servers,
            group_id=bus.group_id(self.group),
            client_id=self.name,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=int(bus.session_timeout * 1000),
            heartbeat_interval_ms=int(bus.heartbeat_interval * 1000),
            rebalance_timeout_ms=int(bus.rebalance_timeout * 1000),
            partition_assignment_strategy=(_ActiveAssignor(self),),
            retry_backoff_ms=20,
            fetch_max_wait_ms=max(int(bus.fetch_max_wait * 1000), 1),
        )
        await kafka.start()
        _leave_at_generation_zero(kafka)
        self._kafka = kafka
        kafka.subscribe(sorted(self._queue_of), listener=_Listener(self))
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
            self._buffer = deque(r for r in self._buffer if self._tp(r) not in revoked)
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
        hand-out counts its last owner committed, where the broker keeps them.
        """
        kafka = self._kafka
        for tp in [tp for tp in self._parts if tp not in assigned]:
            for held in self._parts.pop(tp).held.values():
                held.orphaned = True
        self._buffer = deque(r for r in self._buffer if self._tp(r) in assigned)
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
        coordinator = getattr(kafka, "_coordinator", None)
        if new and coordinator is not None:
            try:
                committed = await coordinator.fetch_committed_offsets(new)
            except (KafkaError, OSError) as exc:  # counts are best effort
                log.debug("could not read commit metadata: %s", exc)
                committed = {}
            for tp, meta in committed.items():
                counts = _json_object((getattr(meta, "metadata", "") or "").encode()) or {}
                part = self._parts.get(tp)
                if part is not None:
                    part.handouts = {int(k): int(v) for k, v in counts.items()}
        await self._commit(*kept)
        self._joined.set()
        self._changed.set()

    # -- offsets ----------------------------------------------------------------------

    def _position(self, part: _Partition) -> tuple[int, str] | None:
        live = {o: h for o, h in part.held.items() if not h.orphaned}
        if live:
            low = min(live)
            meta = json.dumps({str(o): h.handouts for o, h in sorted(live.items())})
            return low, meta
        if part.next is None:
            return None
        return part.next, ""

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
            if position is None or position == part.committed:
                continue
            offsets[tp] = OffsetAndMetadata(position[0], position[1])
            part.committed = position
        if not offsets:
            return
        try:
            await kafka.commit(offsets)
        except (KafkaError, OSError) as exc:
            # A rebalance is under way: a partition kept commits again when assigned back.
            log.debug("commit failed (%s); left to the rebalance", exc)
            for tp in offsets:
                if (part := self._parts.get(tp)) is not None:
                    part.committed = None

    # -- getting ----------------------------------------------------------------------

    def _tp(self, record: Any) -> TopicPartition:
        return TopicPartition(record.topic, record.partition)

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
            tp = self._tp(record)
            if tp in blocked:
                continue
            due = float(_header(record.headers, _DUE, "0") or 0)
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
        tp = self._tp(record)
        part = self._parts.get(tp)
        if part is None or not part.owned or (part.next is not None and record.offset < part.next):
            return None  # revoked meanwhile (fetched again if it comes back), or fetched twice
        queue = self._queue_of[record.topic]
        message_id = _header(record.headers, _ID) or f"{tp.topic}:{tp.partition}:{record.offset}"
        key = (record.key or b"").decode(errors="replace")
        handouts = part.handouts.pop(record.offset, 0) + 1
        deliveries = int(_header(record.headers, _COUNT, "0")) + handouts
        part.next = record.offset + 1
        body = _json_object(record.value)
        policy = self.bus.policy
        reason = ""
        if deliveries > policy.max_deliveries:
            reason = f"delivered {deliveries} times (max {policy.max_deliveries})"
        elif body is None:
            reason = "unreadable body"
        if reason:
            await self.bus.send(
                self.bus.topic(queue, "dead"),
                record.value or b"",
                key=key,
                message_id=message_id,
                count=deliveries,
                reason=reason,
            )
            await self._commit(tp)
            return Delivery(
                queue=queue,
                id=message_id,
                key=key,
                body=body or {},
                deliveries=deliveries,
                dead=True,
                reason=reason,
            )
        assert body is not None  # noqa: S101 - narrowed above
        delivery = Delivery(queue=queue, id=message_id, key=key, body=body, deliveries=deliveries)
        held = _Held(
            delivery=delivery,
            tp=tp,
            offset=record.offset,
            body=record.value or b"",
            handouts=handouts,
            expires=time.monotonic() + policy.visibility,
        )
        part.held[record.offset] = held
        self._held[(queue, message_id)] = held
        await self._commit(tp)  # records the hand-out (metadata) before the work starts
        return delivery

    # -- settling ---------------------------------------------------------------------

    def _take(self, delivery: Delivery) -> _Held | None:
        return self._held.get((delivery.queue, delivery.id))

    async def _settle(self, held: _Held) -> None:
        self._held.pop((held.delivery.queue, held.delivery.id), None)
        part = self._parts.get(held.tp)
        if part is not None and part.held.get(held.offset) is held:
            del part.held[held.offset]
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
            await self.bus.send(
                self.bus.topic(delivery.queue, "dead"),
                held.body,
                key=delivery.key,
                message_id=delivery.id,
                count=delivery.deliveries,
                reason=reason,
            )
        await self._settle(held)

    async def touch(self, delivery: Delivery) -> None:
        """Restart its visibility timer (local only: the group heartbeat is the liveness)."""
        held = self._held.get((delivery.queue, delivery.id))
        if held is not None:
            held.expires = time.monotonic() + self.bus.policy.visibility
            self._changed.set()

    async def _republish(self, held: _Held, *, counted: bool, due: float = 0.0) -> None:
        delivery = held.delivery
        count = delivery.deliveries if counted else delivery.deliveries - 1
        await self.bus.send(
            self.bus.topic(delivery.queue, "retry"),
            held.body,
            key=delivery.key,
            message_id=delivery.id,
            count=count,
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
