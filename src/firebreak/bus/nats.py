"""`NatsBus`: a `TaskBus` on NATS JetStream, durable pull consumers (``nats://``, extra ``nats``).

Layout, for a bus with prefix ``P`` (names are escaped so any queue name is valid):

- one **work-queue stream** per queue, ``P_Q_<queue>`` on subject ``P.q.<queue>``: a message
  leaves the stream when it is acked, so the stream holds only unfinished work (like the
  Redis backend's ``XACK`` + ``XDEL``);
- one **durable pull consumer** per group on it (``ack_wait`` = the visibility timeout,
  unlimited ``max_deliver``): every consumer of a group pulls from the same durable, so
  what a dead consumer held is redelivered to another once its ack wait has passed;
- one **dead-letter stream** per queue, ``P_D_<queue>`` on subject ``P.dead.<queue>``;
- one key-value bucket ``P_R`` counting hand-backs (`release`) per message, so they are not
  counted as deliveries (JetStream counts a ``NAK`` as one);
- no stream for a reply queue (`is_reply_queue`): its subject ``P.q.<queue>`` is published
  to with core NATS and read by a subscription (`NatsReplyConsumer`, ``_nats_replies``).

Deliveries: ``Delivery.id`` is the message's stream sequence; ``deliveries`` is JetStream's
``num_delivered`` minus the message's hand-backs. A message seen with more than
``max_deliveries`` is published to the dead-letter stream, then terminated (``+TERM``), and
handed out once with ``dead=True``. JetStream has no dead-letter queue of its own, and its
``max_deliver`` would only stop deliveries silently, so the consumer does this itself.

Backpressure: a consumer pulls (``$JS.API.CONSUMER.MSG.NEXT``) only as many messages as it
has free slots, so it never holds more than ``max_in_flight``; over more queues than free
slots, the queues take turns with short pulls (see `NatsConsumer`).

Where it differs from the Redis backend:

- one consumer group per queue (a work-queue stream accepts one consumer per subject);
  a second group on the same queue fails with `RuntimeError`. The durable's ack wait is
  the policy of whoever made (or last re-made) it: give every process the same policy;
- `touch` and `release` are not checked for ownership by the server: a consumer that held
  a message past its visibility timeout skips `release` (the message comes back on its
  own), but its `touch` would also extend the new holder's timeout;
- a hand-back is counted in the bucket before the ``NAK``: a consumer dying between the
  two leaves the message one delivery short of its true count (never one over);
- a worker dying between publishing a dead letter and terminating the message may hand
  that message out dead a second time (the dead letter itself is de-duplicated);
- while the server is unreachable, `publish` retries (same message id, de-duplicated by
  the stream) for up to ``publish_timeout`` seconds, `get` returns ``None`` and `ack`
  raises (the message is redelivered: at-least-once); the client reconnects for as long
  as it takes;
- a server killed without a clean shutdown (SIGKILL, power loss) may come back with
  acked messages in its streams and with acks it forgot: the latter are redelivered
  (duplicates, which the worker detects); the former are purged below the durable's ack
  floor whenever a consumer (re)connects, goes idle, or closes.

URL: ``nats://[user:pass@]host[:port][,host2:port...][?prefix=..&visibility_timeout=..
&max_deliveries=..&storage=file|memory&publish_timeout=..]``.

Modules: this one is the bus (URL, names, streams, publishing, dead letters, hand-back
counts); `NatsConsumer` (pulling for free slots, hand-outs, settling) is in
``_nats_consumer``, with what both share (the key header, the API timeout, the transient
errors).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    ConsumerInfo,
    DeliverPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.client import JetStreamContext
from nats.js.kv import KeyValue

from firebreak._lifecycle import SetupClose
from firebreak.bus._nats_consumer import API_TIMEOUT, KEY, TRANSIENT, NatsConsumer
from firebreak.bus._nats_replies import MSG_ID, NatsReplyConsumer
from firebreak.bus.base import BusPolicy, Delivery, is_reply_queue

__all__ = ["NatsBus", "NatsConsumer", "NatsReplyConsumer", "from_url"]

log = logging.getLogger(__name__)

_OPTIONS = frozenset(
    {"prefix", "visibility_timeout", "max_deliveries", "storage", "publish_timeout"}
)


def from_url(url: str, *, policy: BusPolicy | None = None) -> NatsBus:
    """Build (not connect) a bus from a ``nats://`` URL; see the module docstring."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _OPTIONS:
            raise ValueError(
                f"bus URL {url!r}: unknown option {key!r} (known: {', '.join(sorted(_OPTIONS))})"
            )
        ours[key] = value
    try:
        if policy is None:
            policy = BusPolicy(
                visibility_timeout=float(ours.get("visibility_timeout", 30.0)),
                max_deliveries=int(ours.get("max_deliveries", 5)),
            )
        publish_timeout = float(ours.get("publish_timeout", 30.0))
        storage = ours.get("storage", "file")
        bus = NatsBus(
            _servers(parts.scheme, parts.netloc),
            prefix=ours.get("prefix", "firebreak"),
            policy=policy,
            storage=storage,
            publish_timeout=publish_timeout,
        )
    except ValueError as exc:
        raise ValueError(f"bus URL {url!r}: {exc}") from None
    return bus


def _servers(scheme: str, netloc: str) -> list[str]:
    """``nats://u:p@h1:1,h2:2`` -> ``["nats://u:p@h1:1", "nats://u:p@h2:2"]``."""
    auth, at, hosts = netloc.rpartition("@")
    creds = f"{auth}{at}"
    return [f"{scheme}://{creds}{host}" for host in (hosts or "127.0.0.1:4222").split(",")]


def token(text: str) -> str:
    """`text` as one subject token and name part: ``[A-Za-z0-9-]`` kept, the rest ``_xx``.

    The escape is injective and never yields ``_`` followed by a capital letter, so the
    ``_Q_``/``_D_``/``_R`` separators of stream names cannot be forged by a name.
    """
    out = []
    for char in text:
        if char.isascii() and (char.isalnum() or char == "-"):
            out.append(char)
        else:
            out.extend(f"_{byte:02x}" for byte in char.encode())
    return "".join(out) or "_"


class NatsBus(SetupClose):
    """A `TaskBus` on NATS JetStream; build with ``open_bus("nats://…")``.

    Example:
        >>> async with NatsBus(["nats://localhost:4222"], prefix="billing") as bus:
        ...     await bus.publish("invoice.extract", {"run_id": "inv-42"}, key="inv-42")

    Args:
        servers: server URLs as nats-py reads them.
        prefix: every stream, subject and bucket name starts with it (escaped).
        policy: visibility timeout (the consumers' ack wait) and maximum deliveries.
        storage: ``"file"`` (survives a server restart) or ``"memory"``.
        publish_timeout: seconds `publish` keeps retrying while the server is unreachable.
    """

    def __init__(
        self,
        servers: str | Sequence[str] = "nats://127.0.0.1:4222",
        *,
        prefix: str = "firebreak",
        policy: BusPolicy | None = None,
        storage: str = "file",
        publish_timeout: float = 30.0,
    ) -> None:
        if storage not in {"file", "memory"}:
            raise ValueError(f"storage must be 'file' or 'memory', got {storage!r}")
        if not publish_timeout > 0:
            raise ValueError(f"publish_timeout must be > 0, got {publish_timeout!r}")
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.prefix = prefix
        self.policy = policy or BusPolicy()
        self.storage = StorageType.FILE if storage == "file" else StorageType.MEMORY
        self.publish_timeout = publish_timeout
        self.name = token(prefix)
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._streams: set[str] = set()
        self._kv: KeyValue | None = None
        self.epoch = 0
        """Bumped on every reconnect: pulls sent before it may be gone with the server."""

    def __repr__(self) -> str:
        return f"NatsBus(prefix={self.prefix!r})"

    # -- connection -------------------------------------------------------------------

    @property
    def client(self) -> Client:
        """The nats-py connection (after `setup`)."""
        if self._nc is None:
            raise RuntimeError("NatsBus used before setup(); use `async with` or await setup()")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context (after `setup`)."""
        if self._js is None:
            raise RuntimeError("NatsBus used before setup(); use `async with` or await setup()")
        return self._js

    async def setup(self) -> None:
        """Connect (checks JetStream answers); idempotent."""
        if self._nc is not None:
            return

        away = False

        async def on_error(exc: Exception) -> None:
            # While the server is away every reconnect attempt fails: say so once.
            level = logging.DEBUG if away and isinstance(exc, OSError) else logging.WARNING
            log.log(level, "nats: %s", exc or type(exc).__name__)

        async def on_disconnect() -> None:
            nonlocal away
            if self._nc is None or self._nc.is_closed:
                return  # our own close()
            away = True
            log.warning("nats: disconnected from %s; reconnecting", ", ".join(self.servers))

        async def on_reconnect() -> None:
            nonlocal away
            away = False
            self.epoch += 1
            self._streams.clear()  # a restarted server may have lost what we made
            log.warning("nats: reconnected")

        nc = await nats.connect(
            servers=self.servers,
            error_cb=on_error,
            disconnected_cb=on_disconnect,
            reconnected_cb=on_reconnect,
            name=f"firebreak-bus:{self.prefix}",
            connect_timeout=2,
            reconnect_time_wait=0.25,  # seconds
            max_reconnect_attempts=2,  # a server that is not there at all: fail setup()
            allow_reconnect=True,
        )
        # Once connected, ride out any outage: reconnect for as long as it takes (nats-py
        # reads this option on every reconnect attempt).
        nc.options["max_reconnect_attempts"] = -1
        try:
            js = nc.jetstream(timeout=API_TIMEOUT)
            await js.account_info()
        except BaseException:
            await nc.close()
            raise
        self._nc, self._js = nc, js

    async def close(self) -> None:
        """Close the connection; idempotent."""
        nc, self._nc, self._js, self._kv = self._nc, None, None, None
        self._streams.clear()
        if nc is not None and not nc.is_closed:
            await nc.close()

    # -- names ------------------------------------------------------------------------

    def stream(self, queue: str) -> str:
        """The work-queue stream of `queue`."""
        return f"{self.name}_Q_{token(queue)}"

    def subject(self, queue: str) -> str:
        """The subject `queue`'s messages are published on."""
        return f"{self.name}.q.{token(queue)}"

    def dead_stream(self, queue: str) -> str:
        """The stream of `queue`'s dead letters."""
        return f"{self.name}_D_{token(queue)}"

    def dead_subject(self, queue: str) -> str:
        """The subject of `queue`'s dead letters."""
        return f"{self.name}.dead.{token(queue)}"

    @property
    def bucket(self) -> str:
        """The key-value bucket counting hand-backs (`release`)."""
        return f"{self.name}_R"

    @staticmethod
    def durable(group: str) -> str:
        """The durable consumer name of `group`."""
        return token(group)

    # -- streams ----------------------------------------------------------------------

    async def ensure_stream(self, name: str, subject: str, *, work_queue: bool) -> None:
        """Create the stream if missing (a differing existing one is used as it is)."""
        if name in self._streams:
            return
        config = StreamConfig(
            name=name,
            subjects=[subject],
            retention=RetentionPolicy.WORK_QUEUE if work_queue else RetentionPolicy.LIMITS,
            storage=self.storage,
            num_replicas=1,
        )
        try:
            await self.js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10058:  # "stream name already in use" (other settings)
                raise
        self._streams.add(name)

    async def ensure_queue(self, queue: str) -> None:
        """The queue's stream exists."""
        await self.ensure_stream(self.stream(queue), self.subject(queue), work_queue=True)

    async def ensure_group(self, queue: str, group: str) -> None:
        """The queue's stream and the group's durable pull consumer exist.

        Then what lies below the durable's ack floor is purged: a server killed without a
        clean shutdown may bring back messages whose acks had removed them, while the
        durable remembers them as acked (they would never be delivered, nor leave). The
        group is the only one of its work-queue stream, so its ack floor is the stream's.
        """
        await self.ensure_queue(queue)
        config = ConsumerConfig(
            durable_name=self.durable(group),
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.policy.visibility,
            max_deliver=-1,  # dead letters are ours: see the module docstring
            filter_subject=self.subject(queue),
            max_ack_pending=-1,
        )
        stream = self.stream(queue)
        try:
            try:
                info = await self.js.add_consumer(stream, config)
            except nats.js.errors.NotFoundError:  # the stream was deleted meanwhile
                self._streams.discard(stream)
                await self.ensure_queue(queue)
                info = await self.js.add_consumer(stream, config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code != 10100:
                raise
            raise RuntimeError(
                f"queue {queue!r} already has another consumer group: a JetStream "
                "work-queue stream serves one group per queue"
            ) from exc
        await self._purge_acked(stream, info)

    async def _purge_acked(self, stream: str, info: ConsumerInfo) -> None:
        floor = int(info.ack_floor.stream_seq or 0) if info.ack_floor else 0
        if floor > 0:
            await self.js.purge_stream(stream, seq=floor + 1)

    async def compact(self, queue: str, group: str) -> None:
        """Purge what the group's durable has acked but the stream still holds.

        See `ensure_group`; consumers do it when they go idle and when they close.
        """
        stream = self.stream(queue)
        await self._purge_acked(stream, await self.js.consumer_info(stream, self.durable(group)))

    # -- publishing -------------------------------------------------------------------

    async def _publish(
        self, queue: str, subject: str, data: bytes, headers: dict[str, str], *, dead: bool
    ) -> int:
        """Publish, retrying (same message id) while the server is out of reach."""
        stream = self.dead_stream(queue) if dead else self.stream(queue)
        end = time.monotonic() + self.publish_timeout
        while True:
            try:
                if dead:
                    await self.ensure_stream(stream, subject, work_queue=False)
                else:
                    await self.ensure_queue(queue)
                ack = await self.js.publish(
                    subject, data, timeout=API_TIMEOUT, stream=stream, headers=headers
                )
            except TRANSIENT as exc:
                self._streams.discard(stream)  # deleted meanwhile? made again next time
                if time.monotonic() >= end:
                    raise
                log.debug("publish to %s failed, retrying: %r", queue, exc)
                await asyncio.sleep(0.2)
                continue
            return int(ack.seq)

    async def publish(self, queue: str, body: Mapping[str, Any], *, key: str) -> str:
        """Append a message to the queue's stream; its id is its stream sequence.

        A reply queue's message goes out with core NATS instead (see `_nats_replies`); its
        id is the one in its header.
        """
        data = json.dumps(body, separators=(",", ":"), allow_nan=False).encode()
        headers = {MSG_ID: uuid.uuid4().hex, KEY: quote(key, safe="")}
        if is_reply_queue(queue):
            await self.client.publish(self.subject(queue), data, headers=headers)
            return headers[MSG_ID]
        seq = await self._publish(queue, self.subject(queue), data, headers, dead=False)
        return str(seq)

    async def kill(
        self, queue: str, message_id: str, *, key: str, body: str, deliveries: int, reason: str
    ) -> None:
        """Publish a dead letter for message `message_id` of `queue` (de-duplicated)."""
        letter = {"id": message_id, "k": key, "b": body, "n": deliveries, "reason": reason}
        data = json.dumps(letter, separators=(",", ":")).encode()
        headers = {MSG_ID: f"dead:{message_id}"}
        await self._publish(queue, self.dead_subject(queue), data, headers, dead=True)

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> NatsConsumer | NatsReplyConsumer:
        """A consumer of `queues` in `group` (stream and durable are made on its first `get`).

        Reply queues are read by a `NatsReplyConsumer` (core NATS), which reads nothing else.
        """
        replies = [is_reply_queue(q) for q in queues]
        if any(replies):
            if not all(replies):
                raise ValueError("a NATS consumer reads reply queues or task queues, not both")
            return NatsReplyConsumer(
                self, list(queues), group=group, name=name, limit=max_in_flight
            )
        return NatsConsumer(self, list(queues), group=group, name=name, limit=max_in_flight)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """The dead-letter stream of `queue`, oldest first."""
        out: list[Delivery] = []
        seq = 1
        while len(out) < limit:
            try:
                raw = await self.js.get_msg(
                    self.dead_stream(queue), seq=seq, subject=self.dead_subject(queue), next=True
                )
            except nats.js.errors.NotFoundError:
                break
            seq = int(raw.seq or seq) + 1
            try:
                letter = json.loads(raw.data or b"{}")
            except ValueError:
                letter = {}
            if not isinstance(letter, dict):
                letter = {}
            try:  # the dead message's own body: unreadable is why many are here
                body = json.loads(letter.get("b", "{}"))
            except (ValueError, TypeError):
                body = {}
            out.append(
                Delivery(
                    queue=queue,
                    id=str(letter.get("id", "")),
                    key=str(letter.get("k", "")),
                    body=body if isinstance(body, dict) else {},
                    deliveries=int(letter.get("n", 0)),
                    dead=True,
                    reason=str(letter.get("reason", "")),
                )
            )
        return out

    async def delete(self, queue: str) -> None:
        """Delete the queue's stream (with its consumers), dead letters and hand-back counts.

        A reply queue has none of them: nothing to do.
        """
        if is_reply_queue(queue):
            return
        for name in (self.stream(queue), self.dead_stream(queue)):
            self._streams.discard(name)
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_stream(name)
        await self._purge_releases(f"{token(queue)}.>")

    # -- hand-back counts -------------------------------------------------------------

    async def _bucket(self, *, create: bool) -> KeyValue | None:
        if self._kv is None:
            try:
                self._kv = await self.js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                self._kv = await self.js.create_key_value(
                    KeyValueConfig(bucket=self.bucket, history=1, storage=self.storage)
                )
        return self._kv

    def _release_key(self, queue: str, seq: int) -> str:
        return f"{token(queue)}.{seq}"

    async def releases(self, queue: str, seq: int) -> int:
        """How often message `seq` of `queue` was handed back."""
        kv = await self._bucket(create=False)
        if kv is None:
            return 0
        try:
            entry = await kv.get(self._release_key(queue, seq))
        except nats.js.errors.KeyNotFoundError:
            return 0
        try:
            return int(entry.value or b"0")
        except ValueError:
            return 0

    async def add_release(self, queue: str, seq: int) -> None:
        """Count one hand-back of message `seq` of `queue` (compare-and-set)."""
        kv = await self._bucket(create=True)
        assert kv is not None  # noqa: S101 - create=True
        key = self._release_key(queue, seq)
        for _ in range(10):
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                    await kv.create(key, b"1")
                    return
                continue
            count = int(entry.value or b"0") + 1
            with contextlib.suppress(nats.js.errors.KeyWrongLastSequenceError):
                await kv.update(key, str(count).encode(), last=entry.revision)
                return
        raise RuntimeError(f"could not count a hand-back of {queue!r} message {seq}")

    async def forget_releases(self, queue: str, seq: int) -> None:
        """Drop the hand-back count of a settled message."""
        await self._purge_releases(self._release_key(queue, seq))

    async def _purge_releases(self, keys: str) -> None:
        """Drop the hand-back counts under `keys` (a key or a wildcard) from the bucket."""
        with contextlib.suppress(nats.js.errors.NotFoundError):
            await self.js.purge_stream(f"KV_{self.bucket}", subject=f"$KV.{self.bucket}.{keys}")
