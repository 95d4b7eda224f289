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
back, and claim it again). A consumer that holds messages waits a little
(`_redis_consumer._LINGER`, 2 ms at most) for them to be settled before it reads again,
so that under load a read takes what was published meanwhile as one batch.

Publishes, acks and replies leave in batches (`RedisBus.batch`): those made in one turn of the
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

Reply streams (`is_reply_queue`: an orchestrator's ``replies.<name>``) expire: every reply
written sets the stream's time to live to ``reply_ttl`` (default 600 s), and their consumer
renews it while it reads, so the stream of an orchestrator that died goes ``reply_ttl``
after the last reply or read. A consumer whose stream is gone (expired while its process
was frozen, or deleted) makes it and its group again on its next read.

URL: ``redis[s]://[user:pass@]host[:port][/db][?prefix=..&visibility_timeout=..&max_deliveries=..&reply_ttl=..]``;
other query options go to redis-py unchanged.

Modules: this one is the bus (URL, stream names, the scripts, publishing, settling, dead
letters); `RedisConsumer` (reading, claiming, lingering, handing back) is in
``_redis_consumer``, and the batches (`Batcher`) in ``_redis_batch``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis.asyncio as aioredis

from firebreak._lifecycle import SetupClose
from firebreak._urls import split_options
from firebreak.bus._redis_batch import Batcher
from firebreak.bus._redis_consumer import RedisConsumer, dead_letter, text
from firebreak.bus.base import BusPolicy, Delivery, is_reply_queue
from firebreak.store._redis_connect import check_client_options

__all__ = ["REPLY_TTL", "RedisBus", "RedisConsumer", "from_url"]

REPLY_TTL = 600.0
"""Seconds a reply stream outlives its last reply or read (the default of ``reply_ttl``)."""

_OPTIONS = frozenset({"prefix", "visibility_timeout", "max_deliveries", "reply_ttl"})

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
# an optional reply ``XADD`` (and the reply stream's time to live). KEYS[1] stream, KEYS[2]
# reply stream (optional); ARGV group, id, reply body, reply key, reply ttl ms.
_ACK = """
if KEYS[2] then
  redis.call('XADD', KEYS[2], '*', 'b', ARGV[3], 'k', ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[5])
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

# A reply: ``XADD`` and the reply stream's time to live. KEYS[1] stream; ARGV body, key, ms.
_REPLY = """
local id = redis.call('XADD', KEYS[1], '*', 'b', ARGV[1], 'k', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return id
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


def from_url(url: str, *, policy: BusPolicy | None = None) -> RedisBus:
    """Build (not connect) a bus from a ``redis://`` URL; see the module docstring."""
    ours, rest = split_options(url, _OPTIONS)
    try:
        if policy is None:
            policy = BusPolicy(
                visibility_timeout=float(ours.get("visibility_timeout", 30.0)),
                max_deliveries=int(ours.get("max_deliveries", 5)),
            )
        reply_ttl = float(ours.get("reply_ttl", REPLY_TTL))
        check_client_options(rest)  # not at the first connect, deep in a traceback
        return RedisBus(
            rest, prefix=ours.get("prefix", "firebreak"), policy=policy, reply_ttl=reply_ttl
        )
    except ValueError as exc:
        raise ValueError(f"bus URL {url!r}: {exc}") from None


class RedisBus(SetupClose):
    """A `TaskBus` on Redis Streams; build with ``open_bus("redis://…")``.

    Example:
        >>> async with RedisBus("redis://localhost:6379/0", prefix="billing") as bus:
        ...     await bus.publish("invoice.extract", {"run_id": "inv-42"}, key="inv-42")

    Args:
        url: ``redis://`` or ``rediss://`` URL as redis-py reads it.
        prefix: every key starts with ``<prefix>:``.
        policy: visibility timeout and maximum deliveries.
        reply_ttl: seconds a reply stream outlives its last reply or read.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "firebreak",
        policy: BusPolicy | None = None,
        reply_ttl: float = REPLY_TTL,
    ):
        if not reply_ttl >= 1:  # PEXPIRE's unit, and a stream renewed every quarter of it
            raise ValueError(f"reply_ttl must be >= 1 second, got {reply_ttl!r}")
        self.url = url
        self.prefix = prefix
        self.policy = policy or BusPolicy()
        self.reply_ttl = reply_ttl
        self.reply_ms = str(int(reply_ttl * 1000))
        """`reply_ttl` as PEXPIRE takes it."""
        self._client: aioredis.Redis | None = None
        self._batch: Batcher | None = None
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
        self._batch = Batcher(client, publish=_PUBLISH)
        scripts = (_CLAIM_OWN, _ACK, _ACK_MANY, _READ, _REPLY)
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
    def batch(self) -> Batcher:
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
        """``XADD`` the message to the queue's stream (a reply stream's time to live too)."""
        encoded = json.dumps(body, separators=(",", ":"), allow_nan=False)
        stream = self.stream(queue)
        if is_reply_queue(queue):
            return text(await self._script(_REPLY, [stream], [encoded, key, self.reply_ms]))
        return text(await self.batch.call("XADD", stream, "*", "b", encoded, "k", key))

    async def keep(self, queues: Sequence[str]) -> None:
        """Renew the time to live of the reply streams among `queues` (their reader is alive)."""
        for queue in queues:
            if is_reply_queue(queue):
                await self.batch.call("PEXPIRE", self.stream(queue), self.reply_ms)

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> RedisConsumer:
        """A consumer of `queues` in `group` (groups are created on its first `get`)."""
        return RedisConsumer(self, list(queues), group=group, name=name, limit=max_in_flight)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """The dead-letter stream of `queue`, oldest first."""
        entries = await self.client.xrange(self.dead_stream(queue), count=limit)
        return [
            dead_letter(queue, {text(k): text(v) for k, v in fields.items()})
            for _, fields in entries
        ]

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
            args += [json.dumps(body, separators=(",", ":"), allow_nan=False), key, self.reply_ms]
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
