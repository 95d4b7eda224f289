"""`RedisBus`: a `TaskBus` on Redis Streams with consumer groups (``redis://``, extra ``redis``).

One stream per queue (``<prefix>:q:<queue>``) and one per dead-letter destination
(``<prefix>:dead:<queue>``). Consumers read with ``XREADGROUP``; what a dead consumer held
is taken over with ``XAUTOCLAIM`` once it has been idle for the visibility timeout, and a
message whose delivery count passes the maximum is moved to the dead-letter stream. An
acked message is deleted (``XACK`` + ``XDEL``), so a stream holds only unfinished work.
A consumer never holds more than its ``max_in_flight``: ``XREADGROUP``'s COUNT is per
stream, so what one read of several streams brings past that goes back to the group at
once (marked idle, for the next ``XAUTOCLAIM``), and until the backlog is gone the
consumer's reads are a script that stops at its room in all, taking the streams in turn
(a worker with less room than the queues' backlog would otherwise hand most of each read
back, and claim it again). A consumer that holds messages waits a
little (`_LINGER`, 2 ms at most) for them to be settled before it reads again, so that
under load a read takes what was published meanwhile as one batch.

Publishes, acks and replies leave in batches (`_Batcher`): those made in one turn of the
event loop, or while a batch is in flight, go together as one ``MULTI``/``EXEC`` pipeline:
under load many of them cost one socket write and one server wake-up, which is most of
what a small command costs, and a consumer blocked on the streams is woken once with the
whole batch, not with its first message (a blocked ``XREADGROUP`` is served after each
command, so a plain pipeline of ``XADD``s would wake it after the first, and it would come
back for the rest). The publishes of a batch are one command, a script that adds each
(`_PUBLISH`, its messages one JSON argument): redis-py packs each command's arguments and
reads each ``QUEUED`` answer of a transaction in Python, ~20 µs of the sender's CPU per
publish against ~5 in the script (the orchestrator publishes every step's task). A lone
command waits only for the end of the current turn of the loop. Blocking reads
(``XREADGROUP``) never join a batch.

A worker whose store is a `RedisStore` on the same server replies and acks inside its
commit's script (`RedisConsumer.reply_and_ack_in`): the store runs the ``XADD``,
``XACK`` and ``XDEL`` only if the commit is the first.

URL: ``redis[s]://[user:pass@]host[:port][/db][?prefix=..&visibility_timeout=..&max_deliveries=..]``;
other query options go to redis-py unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from firebreak._lifecycle import SetupClose
from firebreak.bus.base import BusPolicy, Delivery, check_consumer

__all__ = ["RedisBus", "RedisConsumer", "from_url"]

_OPTIONS = frozenset({"prefix", "visibility_timeout", "max_deliveries"})

# Touch or hand back a message only if this consumer still owns it: a message claimed by
# another consumer meanwhile is theirs. KEYS[1] stream; ARGV group, consumer, id, mode,
# idle ms (release), retry count (release).
_CLAIM_OWN = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
if ARGV[4] == 'touch' then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
else
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3],
             'IDLE', ARGV[5], 'RETRYCOUNT', ARGV[6], 'JUSTID')
end
return 1
"""

# Settle a message in one round trip: ``XACK`` + ``XDEL`` (atomic, as a script is), after
# an optional reply ``XADD``. KEYS[1] stream, KEYS[2] reply stream (optional); ARGV group,
# id, reply body, reply key.
_ACK = """
if KEYS[2] then
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[3], 'k', ARGV[4])
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
"""

# Read new messages of several streams, no more than a count in all (XREADGROUP's COUNT is
# per stream), the streams in the order given. KEYS streams; ARGV group, consumer, count.
_READ = """
local out, left = {}, tonumber(ARGV[3])
for _, key in ipairs(KEYS) do
  if left <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', left,
                       'STREAMS', key, '>')
  if r then
    out[#out + 1] = r[1]
    left = left - #r[1][2]
  end
end
return out
"""

# Ack and delete several messages of one stream. KEYS[1] stream; ARGV group, ids.
_ACK_MANY = """
for i = 2, #ARGV do
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
  redis.call('XDEL', KEYS[1], ARGV[i])
end
return #ARGV - 1
"""

# Add several messages, each to its stream, as one unit (a blocked reader is served after
# it, with all of them). ARGV[1] a JSON array of [stream, body, key]; answers each id, or
# that message's own error.
_PUBLISH = """
local out = {}
for i, m in ipairs(cjson.decode(ARGV[1])) do
  out[i] = redis.pcall('XADD', m[1], '*', 'b', m[2], 'k', m[3])
end
return out
"""

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_LINGER = 0.002
"""Seconds a consumer that holds messages waits for them to be settled before it reads
again: under load its reads take a batch, not each message as it is published (bench, 4
workers: workers' CPU per step 137-149 -> 110-126 us, Redis reads per step 0.6 -> 0.3-0.4).
An idle consumer reads at once, so one-at-a-time latency is unchanged."""

_MAX_BATCH = 512
"""Most commands in one pipeline: bounds what a backlog adds to each one's wait."""

_Command = tuple[tuple[Any, ...], str | None, "asyncio.Future[Any]"]


def from_url(url: str, *, policy: BusPolicy | None = None) -> RedisBus:
    """Build (not connect) a bus from a ``redis://`` URL; see the module docstring."""
    parts = urlsplit(url)
    ours: dict[str, str] = {}
    theirs: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        (ours.__setitem__(key, value) if key in _OPTIONS else theirs.append((key, value)))
    rest = urlunsplit(parts._replace(query=urlencode(theirs)))
    if policy is None:
        try:
            policy = BusPolicy(
                visibility_timeout=float(ours.get("visibility_timeout", 30.0)),
                max_deliveries=int(ours.get("max_deliveries", 5)),
            )
        except ValueError as exc:
            raise ValueError(f"bus URL {url!r}: {exc}") from None
    return RedisBus(rest, prefix=ours.get("prefix", "firebreak"), policy=policy)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class _Batcher:
    """Commands of one turn of the loop, or queued while a batch is in flight, sent together.

    A batch of several commands is a ``MULTI``/``EXEC`` pipeline, so the server applies it
    before serving blocked readers (see the module docstring); each command still keeps
    its own reply or error (a script's error is its caller's alone); a
    connection error reaches every caller of the batch. A caller cancelled while queued
    does not unsend its command: a publish may still happen, an ack may still land, both
    of which at-least-once delivery allows.
    """

    def __init__(self, client: aioredis.Redis) -> None:
        self._client: Any = client  # redis-py's execute_command is untyped
        self._publish = (_PUBLISH, client.register_script(_PUBLISH).sha)
        """The publishing script: its source and SHA1."""
        self._queue: deque[_Command] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.pipelines = 0
        """Pipelines sent so far (for measurement and tests)."""

    async def call(self, *args: Any, script: str | None = None) -> Any:
        """Run the command `args` (an ``EVALSHA`` of `script`'s source, if given).

        ``XADD stream * b body k key`` (a publish) joins the batch's other publishes in one
        script call (`_merge`); it answers as the ``XADD`` would.
        """
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((args, script, future))
        if not self._busy:
            # Sent from a task of its own, which first runs after every callback already
            # due in this turn of the loop: the commands those issue leave with this one.
            self._busy = True
            self._task = asyncio.create_task(self._drain(), name="firebreak-redis-bus-batch")
        return await future

    async def close(self) -> None:
        """Wait for the commands already queued."""
        task = self._task
        if task is not None and not task.done():
            await task

    async def _drain(self) -> None:
        try:
            while self._queue:
                count = min(_MAX_BATCH, len(self._queue))
                await self._send(self._merge([self._queue.popleft() for _ in range(count)]))
        finally:
            self._busy = False
            if self._queue:  # only if cancelled: nobody would ever answer these
                _fail(self._queue, ConnectionError("redis bus batch cancelled"))
                self._queue.clear()

    def _merge(self, batch: list[_Command]) -> list[_Command]:
        """The batch with its publishes (two or more) as one call of `_PUBLISH`, first.

        That call's future answers each publish's own: its id, or its own error.
        """
        adds = [command for command in batch if command[1] is None and command[0][0] == "XADD"]
        if len(adds) < 2:
            return batch
        rest = [command for command in batch if command[1] is not None or command[0][0] != "XADD"]
        payload = _ENCODE([[args[1], args[4], args[6]] for args, _, _ in adds])
        futures = [future for _, _, future in adds]
        merged: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        merged.add_done_callback(lambda done: _spread(done, futures))
        source, sha = self._publish
        return [(("EVALSHA", sha, 0, payload), source, merged), *rest]

    async def _send(self, batch: list[_Command], *, reload: bool = True) -> None:
        try:
            replies = await self._execute([command[0] for command in batch])
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.pipelines += 1
        missing: list[_Command] = []
        for command, reply in zip(batch, replies, strict=True):
            future = command[2]
            if isinstance(reply, NoScriptError) and reload and command[1] is not None:
                missing.append(command)  # the server lost its scripts (a restart)
            elif future.done():  # its caller was cancelled
                continue
            elif isinstance(reply, BaseException):
                future.set_exception(reply)
            else:
                future.set_result(reply)
        if missing:
            try:
                for source in {command[1] for command in missing if command[1] is not None}:
                    await self._client.script_load(source)
            except Exception as exc:  # noqa: BLE001 - each caller gets the error
                _fail(missing, exc)
                return
            await self._send(missing, reload=False)

    async def _execute(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        """Each command's reply or its own error; a connection error is raised."""
        if len(commands) == 1:
            try:
                return [await self._client.execute_command(*commands[0])]
            except ResponseError as exc:
                return [exc]
        pipe = self._client.pipeline(transaction=True)
        for args in commands:
            pipe.execute_command(*args)
        return list(await pipe.execute(raise_on_error=False))


def _spread(merged: asyncio.Future[Any], futures: list[asyncio.Future[Any]]) -> None:
    """Answer each publish of a `_PUBLISH` call from that call's outcome."""
    if merged.cancelled():
        replies: list[Any] = [ConnectionError("redis bus batch cancelled")] * len(futures)
    elif (error := merged.exception()) is not None:
        replies = [error] * len(futures)
    else:
        replies = list(merged.result())
    for future, reply in zip(futures, replies, strict=True):
        if future.done():  # its caller was cancelled
            continue
        if isinstance(reply, BaseException):
            future.set_exception(reply)
        else:
            future.set_result(reply)


def _fail(batch: Iterable[_Command], error: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)


class RedisBus(SetupClose):
    """A `TaskBus` on Redis Streams; build with ``open_bus("redis://…")``.

    Example:
        >>> async with RedisBus("redis://localhost:6379/0", prefix="billing") as bus:
        ...     await bus.publish("invoice.extract", {"run_id": "inv-42"}, key="inv-42")

    Args:
        url: ``redis://`` or ``rediss://`` URL as redis-py reads it.
        prefix: every key starts with ``<prefix>:``.
        policy: visibility timeout and maximum deliveries.
    """

    def __init__(self, url: str, *, prefix: str = "firebreak", policy: BusPolicy | None = None):
        self.url = url
        self.prefix = prefix
        self.policy = policy or BusPolicy()
        self._client: aioredis.Redis | None = None
        self._batch: _Batcher | None = None
        self._sha: dict[str, str] = {}

    def __repr__(self) -> str:
        return f"RedisBus(prefix={self.prefix!r})"

    @property
    def client(self) -> Any:  # redis-py's stubs do not type stream replies usefully
        """The connection pool, an ``redis.asyncio.Redis`` (after `setup`)."""
        if self._client is None:
            raise RuntimeError("RedisBus used before setup(); use `async with` or await setup()")
        return self._client

    async def setup(self) -> None:
        """Connect (checks the server answers); idempotent."""
        if self._client is not None:
            return
        client = aioredis.Redis.from_url(self.url)
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client
        self._batch = _Batcher(client)
        scripts = (_CLAIM_OWN, _ACK, _ACK_MANY, _READ)
        self._sha = {src: client.register_script(src).sha for src in scripts}

    async def close(self) -> None:
        """Close the connection pool (after the commands already queued); idempotent."""
        client, self._client = self._client, None
        batch, self._batch = self._batch, None
        if batch is not None:
            with contextlib.suppress(Exception):
                await batch.close()
        if client is not None:
            await client.aclose()

    @property
    def batch(self) -> _Batcher:
        """Where this bus's short commands go (after `setup`)."""
        if self._batch is None:
            raise RuntimeError("RedisBus used before setup(); use `async with` or await setup()")
        return self._batch

    async def _script(self, source: str, keys: Sequence[str], args: Iterable[Any]) -> Any:
        """Run a script (``EVALSHA``; loaded again if the server lost it) in the batch."""
        sha = self._sha.get(source, "")
        return await self.batch.call("EVALSHA", sha, len(keys), *keys, *args, script=source)

    def stream(self, queue: str) -> str:
        """The stream key of `queue`."""
        return f"{self.prefix}:q:{queue}"

    def dead_stream(self, queue: str) -> str:
        """The stream key of `queue`'s dead letters."""
        return f"{self.prefix}:dead:{queue}"

    async def publish(self, queue: str, body: Mapping[str, Any], *, key: str) -> str:
        """``XADD`` the message to the queue's stream."""
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        message_id = await self.batch.call("XADD", self.stream(queue), "*", "b", text, "k", key)
        return _text(message_id)

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> RedisConsumer:
        """A consumer of `queues` in `group` (groups are created on its first `get`)."""
        return RedisConsumer(self, list(queues), group=group, name=name, limit=max_in_flight)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """The dead-letter stream of `queue`, oldest first."""
        entries = await self.client.xrange(self.dead_stream(queue), count=limit)
        out = []
        for _, fields in entries:
            data = {_text(k): _text(v) for k, v in fields.items()}
            try:
                body = json.loads(data.get("b", "{}"))
            except ValueError:
                body = {}
            out.append(
                Delivery(
                    queue=queue,
                    id=data.get("id", ""),
                    key=data.get("k", ""),
                    body=body if isinstance(body, dict) else {},
                    deliveries=int(data.get("n", "0")),
                    dead=True,
                    reason=data.get("reason", ""),
                )
            )
        return out

    async def delete(self, queue: str) -> None:
        """Delete the queue's stream (with its groups) and its dead letters."""
        await self.client.delete(self.stream(queue), self.dead_stream(queue))

    async def kill(
        self, queue: str, message_id: str, group: str, fields: Mapping[str, str]
    ) -> None:
        """Move a message to the dead-letter stream and off the queue, in one transaction."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.xadd(self.dead_stream(queue), dict(fields))
            pipe.xack(self.stream(queue), group, message_id)
            pipe.xdel(self.stream(queue), message_id)
            await pipe.execute()

    async def settle(
        self,
        queue: str,
        group: str,
        message_id: str,
        reply: tuple[str, Mapping[str, Any], str] | None = None,
    ) -> None:
        """Ack and delete a message in one script; first ``XADD`` `reply` (queue, body, key)."""
        keys = [self.stream(queue)]
        args = [group, message_id]
        if reply is not None:
            to, body, key = reply
            keys.append(self.stream(to))
            args += [json.dumps(body, separators=(",", ":"), allow_nan=False), key]
        await self._script(_ACK, keys, args)

    async def settle_many(self, queue: str, group: str, message_ids: Sequence[str]) -> None:
        """Ack and delete several messages of one queue in one script."""
        await self._script(_ACK_MANY, [self.stream(queue)], [group, *message_ids])

    async def read(
        self, queues: Sequence[str], group: str, name: str, count: int
    ) -> list[tuple[Any, list[tuple[Any, dict[Any, Any]]]]]:
        """New messages of `queues` (in that order), at most `count` in all; none waited for."""
        reply = await self._script(_READ, [self.stream(q) for q in queues], [group, name, count])
        return [
            (stream, [(i, dict(zip(f[::2], f[1::2], strict=True))) for i, f in entries])
            for stream, entries in reply or []
        ]

    async def claim_own(self, queue: str, group: str, name: str, args: Sequence[Any]) -> int:
        """Run the ownership-checked ``XCLAIM`` script (touch or release)."""
        return int(await self._script(_CLAIM_OWN, [self.stream(queue)], [group, name, *args]))


class RedisConsumer:
    """A member of a consumer group over one or more streams of a `RedisBus`."""

    def __init__(
        self, bus: RedisBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        check_consumer(queues, limit)
        self.bus = bus
        self.queues = queues
        self.group = group
        self.name = name
        self.limit = limit
        self._held: set[tuple[str, str]] = set()
        self._buffer: deque[Delivery] = deque()
        self._ready = False
        self._cursors = dict.fromkeys(queues, "0-0")
        self._exact = 0  # the next reads count in all, not per stream (see `_read`); its turn
        self._next_claim = 0.0
        self._slot = asyncio.Event()
        visibility = bus.policy.visibility
        self._claim_every = min(visibility / 4, 1.0)

    @property
    def in_flight(self) -> int:
        """Messages delivered to this consumer and not yet settled."""
        return len(self._held)

    async def _ensure_groups(self) -> None:
        if self._ready:
            return
        for queue in self.queues:
            try:
                await self.bus.client.xgroup_create(
                    self.bus.stream(queue), self.group, id="0", mkstream=True
                )
            except ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise
        self._ready = True

    async def get(self, wait: float) -> Delivery | None:
        """The next message: a buffered one, an abandoned one, else a new one."""
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
                if await self._claim(free):  # it filled the room: more may be waiting
                    self._next_claim = 0.0
                if self._buffer:
                    continue
                free = self.limit - len(self._held)
                if free <= 0:
                    continue
            if self._held:
                # Busy: what is published while the held work ends gathers for one read
                # (up to _LINGER), not a read for each message or two.
                await self._linger(min(_LINGER, left))
                free = self.limit - len(self._held)
                left = end - time.monotonic()
            block = max(min(left, self._claim_every), 0.001)
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
            queue = by_stream[_text(stream)]
            for message_id, fields in entries:
                if got >= count:  # COUNT is per stream: several streams gave more in all
                    extra.append((queue, _text(message_id)))
                elif await self._accept(queue, _text(message_id), fields, 1):
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
            self._cursors[queue] = _text(reply[0])
            claimed = [(_text(raw_id), fields) for raw_id, fields in reply[1]]
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
            times = {_text(p["message_id"]): int(p["times_delivered"]) for p in pending}
            for message_id, fields in claimed:
                if await self._accept(queue, message_id, fields, times.get(message_id, 1)):
                    count -= 1
        return count <= 0

    async def _accept(
        self, queue: str, message_id: str, raw: Mapping[Any, Any] | None, deliveries: int
    ) -> bool:
        """Buffer a delivery (or dead-letter it); whether it now counts as held."""
        fields = {_text(k): _text(v) for k, v in (raw or {}).items()}
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
            try:
                parsed = json.loads(fields.get("b", "{}"))
            except ValueError:
                parsed = {}
            self._buffer.append(
                Delivery(
                    queue=queue,
                    id=message_id,
                    key=key,
                    body=parsed if isinstance(parsed, dict) else {},
                    deliveries=deliveries,
                    dead=True,
                    reason=reason,
                )
            )
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
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        done = await write(
            [
                ["XADD", self.bus.stream(queue), "*", "b", text, "k", key],
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
