"""Circuit breakers shared by every process through Redis.

One Lua script makes every transition atomically, on Redis server time (``TIME``), so all
processes see one breaker: the window is kept as per-bucket counters that expire by
themselves, and a half-open probe is a lease taken with ``SET NX PX`` that frees itself
if the probe never reports.

A healthy closed breaker costs no round trip per call: each process caches the state
for `cache_for` seconds (0.5 by default) and buffers the outcomes of successful calls,
sending them `flush_every` seconds after the first (by a timer, and at `aclose`); a
failure is sent at once, with the buffered successes, so a trip is timely. An open
breaker rejects from the cache until its open time is up. If Redis cannot be reached,
the breaker falls back to a local one (`LocalBreakerState`) and says so with a
`BreakerBackendChanged` event; it tries Redis again after `retry_redis_after` seconds.

>>> store = RedisBreakerStore("redis://localhost:6379/0")
>>> registry = BreakerRegistry(store=store)        # every breaker of it is shared
>>> ocr = registry.get("ocr-api")
>>> ...
>>> await store.aclose()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import weakref
from typing import Any, Literal

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from firebreak.clock import Cancellable, Clock, system_clock
from firebreak.errors import CircuitOpenError, DeadlineExceeded
from firebreak.events import BreakerBackendChanged, BreakerStateChanged, emit
from firebreak.resilience.breaker import BreakerRegistry
from firebreak.resilience.breaker_state import (
    BreakerPolicy,
    LocalBreakerState,
    State,
    lease_of,
)
from firebreak.resilience.timeout import as_seconds, time_left

__all__ = [
    "RedisBreakerState",
    "RedisBreakerStore",
    "redis_breakers",
]

log = logging.getLogger("firebreak.resilience.redis_breaker")

# Local tickets are offset so a ticket says which backend admitted it (both are > 0).
_LOCAL = 1 << 40


_SCRIPT = r"""
-- KEYS: none (all keys are under ARGV[1], the breaker's base key)
-- ARGV: base, op, ticket, ok, slow, fail, retry_after_ms, jitter factor,
--       window_ms, buckets, minimum_calls, failure_rate, slow_rate, consecutive (0 = off),
--       open_ms, max_open_ms, probes, probe_lease_ms
local B, op, ticket = ARGV[1], ARGV[2], ARGV[3]
local ok, slow, fail = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local retry_after, u = tonumber(ARGV[7]), tonumber(ARGV[8])
local window, buckets, minimum = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local frate, srate, consec_limit = tonumber(ARGV[12]), tonumber(ARGV[13]), tonumber(ARGV[14])
local open_ms, max_open_ms = tonumber(ARGV[15]), tonumber(ARGV[16])
local probes, lease = tonumber(ARGV[17]), tonumber(ARGV[18])
local width = math.max(1, math.floor(window / buckets))

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local h = redis.call('HMGET', B, 'state', 'open_until', 'trips', 'consec')
local state, open_until = h[1] or 'closed', tonumber(h[2] or '0')
local trips, consec = tonumber(h[3] or '0'), tonumber(h[4] or '0')
local epoch = math.floor(now / width)
local old, why, open_for = '', '', -1

local function move(new, reason)
  old, why = state, reason
  for i = 1, probes do redis.call('DEL', B .. ':p:' .. i) end
  if new ~= 'half_open' then
    consec = 0
    for e = epoch - buckets, epoch do redis.call('DEL', B .. ':w:' .. e) end
  end
  if new == 'closed' then trips = 0 end
  state = new
  redis.call('HSET', B, 'state', state, 'trips', trips, 'consec', consec,
    'open_until', open_until)
end

local function trip(reason)
  trips = trips + 1
  local base = math.min(max_open_ms, open_ms * 2 ^ (trips - 1))
  open_for = math.max(math.floor(base * u), retry_after)
  open_until = now + open_for
  move('open', reason)
end

local function reply(verdict, tk, wait)
  if state == 'open' and wait == 0 then wait = math.max(0, open_until - now) end
  return {verdict, tk, state, wait, old, why, open_for}
end

local function slot_of(tk)
  for i = 1, probes do
    if redis.call('GET', B .. ':p:' .. i) == tk then return B .. ':p:' .. i end
  end
  return nil
end

if op == 'acquire' then
  if state == 'closed' then return reply('ok', 0, 0) end
  if state == 'open' then
    if now < open_until then return reply('open', 0, open_until - now) end
    move('half_open', 'open time elapsed')
  end
  local wait = -1
  for i = 1, probes do
    local key = B .. ':p:' .. i
    local tk = redis.call('HINCRBY', B, 'tickets', 1)
    if redis.call('SET', key, tk, 'NX', 'PX', lease) then return reply('ok', tk, 0) end
    local left = redis.call('PTTL', key)
    if left > 0 and (wait < 0 or left < wait) then wait = left end
  end
  return reply('half_open', 0, wait)
end

if op == 'release' then
  local key = slot_of(ticket)
  if key then redis.call('DEL', key) end
  return reply('ok', 0, 0)
end

-- op == 'record'
if ticket ~= '0' then
  local key = slot_of(ticket)
  if not key or state ~= 'half_open' then return reply('ok', 0, 0) end
  if fail > 0 then
    trip('probe failed')
    return reply('ok', 0, 0)
  end
  redis.call('SET', key, 'ok')
  local done = 0
  for i = 1, probes do
    if redis.call('GET', B .. ':p:' .. i) == 'ok' then done = done + 1 end
  end
  if done >= probes then move('closed', done .. ' probe(s) succeeded') end
  return reply('ok', 0, 0)
end
if state ~= 'closed' then return reply('ok', 0, 0) end  -- late outcomes of an old window
local w = B .. ':w:' .. epoch
redis.call('HINCRBY', w, 'c', ok + fail)
if fail > 0 then redis.call('HINCRBY', w, 'f', fail) end
if slow > 0 then redis.call('HINCRBY', w, 's', slow) end
redis.call('PEXPIRE', w, window + width)
if ok > 0 then consec = 0 end
consec = consec + fail
redis.call('HSET', B, 'consec', consec)
if consec_limit > 0 then
  if fail > 0 and consec >= consec_limit then trip(consec .. ' consecutive failures') end
  return reply('ok', 0, 0)
end
if fail == 0 and slow == 0 then return reply('ok', 0, 0) end
local calls, fails, slows = 0, 0, 0
for e = epoch - buckets + 1, epoch do
  local v = redis.call('HMGET', B .. ':w:' .. e, 'c', 'f', 's')
  calls = calls + tonumber(v[1] or '0')
  fails = fails + tonumber(v[2] or '0')
  slows = slows + tonumber(v[3] or '0')
end
if calls >= minimum then
  if fails / calls >= frate then
    trip(string.format('failure rate %.2f >= %s', fails / calls, ARGV[12]))
  elseif slows / calls >= srate then
    trip(string.format('slow-call rate %.2f >= %s', slows / calls, ARGV[13]))
  end
end
return reply('ok', 0, 0)
"""


class RedisBreakerStore:
    """Makes `RedisBreakerState`s that share one Redis connection pool.

    Pass it as ``BreakerRegistry(store=...)``: it is called with a breaker's name and
    policy. Nothing connects until the first call that needs Redis; close with `aclose`.

    Args:
        url: ``redis://`` or ``rediss://`` URL.
        prefix: keys are ``<prefix>:breaker:<name>…``.
        clock: monotonic clock for the local cache and the fallback breaker.
        cache_for: seconds a process trusts its cached state (closed or open).
        flush_every: seconds successes may wait in the local buffer.
        retry_redis_after: seconds in local fallback before Redis is tried again.
        timeout: seconds a Redis call may take before the breaker falls back, waiting for
            a free connection included.
        max_connections: connections to Redis at most; more calls at once wait for one
            (redis-py's default pool refuses them instead, which read as "unreachable").
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "firebreak",
        clock: Clock = system_clock,
        cache_for: float = 0.5,
        flush_every: float = 0.15,
        retry_redis_after: float = 5.0,
        timeout: float = 1.0,
        max_connections: int = 50,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.clock = clock
        self.cache_for = cache_for
        self.flush_every = flush_every
        self.retry_redis_after = retry_redis_after
        self.timeout = timeout
        self.max_connections = max_connections
        self._client: aioredis.Redis | None = None
        self._script: AsyncScript | None = None
        self._states: weakref.WeakSet[RedisBreakerState] = weakref.WeakSet()
        self._flushing: set[asyncio.Task[None]] = set()  # timed flushes under way

    def __call__(self, name: str, policy: BreakerPolicy) -> RedisBreakerState:
        """The shared state of breaker `name` (the `BreakerRegistry` store factory)."""
        state = RedisBreakerState(name, policy, store=self)
        self._states.add(state)
        return state

    def script(self) -> AsyncScript:
        """The transition script on this store's connection (connecting lazily)."""
        if self._script is None:
            # A blocking pool: a burst of calls (a cold cache, many failures at once) waits
            # for a connection, up to `timeout`, instead of failing as if Redis were down.
            pool = aioredis.BlockingConnectionPool.from_url(
                self.url,
                max_connections=self.max_connections,
                timeout=self.timeout,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),
            )
            self._client = aioredis.Redis.from_pool(pool)  # closing the client closes the pool
            self._script = self._client.register_script(_SCRIPT)
        return self._script

    async def ping(self) -> None:
        """Check that Redis answers (raises `RedisError` if not)."""
        self.script()
        assert self._client is not None  # noqa: S101 - script() connected it
        await self._client.ping()

    async def aclose(self) -> None:
        """Send the successes still buffered, then close the connection pool; idempotent."""
        for state in list(self._states):
            state.cancel_flush()  # a timer must not reconnect a store that was closed
            if self._client is not None:
                with contextlib.suppress(RedisError):  # unreachable: nothing more to do
                    await state.flush()
        client, self._client, self._script = self._client, None, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> RedisBreakerStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class RedisBreakerState:
    """One breaker's state in Redis, with a short local cache and a local fallback.

    Implements `BreakerStore`; made by `RedisBreakerStore`.
    """

    def __init__(
        self,
        name: str,
        policy: BreakerPolicy,
        *,
        store: RedisBreakerStore,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.policy = policy
        self._store = store
        self._clock = store.clock
        self._rng = rng or random.Random()
        self._key = f"{store.prefix}:breaker:{name}"
        self._attempts: float | None = None  # the longest attempt timeout of the callers
        self._policy_args = (
            str(round(as_seconds(policy.window) * 1000)),
            str(policy.buckets),
            str(policy.minimum_calls),
            repr(policy.failure_rate),
            repr(policy.slow_call_rate),
            str(policy.consecutive_failures or 0),
            str(round(as_seconds(policy.open_duration) * 1000)),
            str(round(as_seconds(policy.max_open_duration) * 1000)),
            str(policy.half_open_probes),
            _lease_ms(policy, None),
        )
        self._state: State = "closed"
        self._seen_at = -float("inf")  # when the cached state was read (local monotonic)
        self._open_until = 0.0  # local monotonic estimate of the end of the open time
        self._ok = self._slow = 0  # buffered outcomes of closed-state successes
        self._buffered_at = 0.0
        self._local: LocalBreakerState | None = None
        self._local_since = 0.0
        self._lock = asyncio.Lock()
        self._flush_timer: Cancellable | None = None

    def __repr__(self) -> str:
        return f"RedisBreakerState({self.name!r}, state={self.current()!r})"

    def expect_attempts(self, seconds: float) -> None:
        """Callers' attempts last up to `seconds`: probe leases follow (if not set)."""
        self._attempts = max(self._attempts or 0.0, seconds)
        self._policy_args = (*self._policy_args[:-1], _lease_ms(self.policy, self._attempts))
        if self._local is not None:
            self._local.expect_attempts(seconds)

    @property
    def backend(self) -> Literal["redis", "local"]:
        """``local`` while Redis is unreachable, else ``redis``."""
        return "local" if self._local is not None else "redis"

    def current(self) -> State:
        """The state as last seen (at most `cache_for` old while calls flow)."""
        if self._local is not None:
            return self._local.current()
        if self._state == "open" and self._clock.now() >= self._open_until:
            return "half_open"
        return self._state

    # -- the BreakerStore protocol ------------------------------------------------------

    async def acquire(self) -> int:
        """Admit a call (0, or a probe ticket) or raise `CircuitOpenError`."""
        local = await self._local_or_retry()
        if local is not None:
            ticket = local.admit()
            return ticket + _LOCAL if ticket else 0
        now = self._clock.now()
        fresh = now - self._seen_at < self._store.cache_for
        if fresh and self._state == "closed":
            return 0
        if fresh and self._state == "open" and now < self._open_until:
            raise CircuitOpenError(self.name, retry_after=self._open_until - now)
        reply = await self._run("acquire")
        if reply is None:
            return await self.acquire()  # fell back to the local breaker
        verdict, ticket, _, wait = reply[0], int(reply[1]), reply[2], int(reply[3])
        if verdict == "ok":
            return ticket
        raise CircuitOpenError(self.name, retry_after=wait / 1000 if wait >= 0 else None)

    async def record(
        self, ticket: int, *, failed: bool, slow: bool, retry_after: float | None
    ) -> None:
        """Count an admitted call's outcome: successes are buffered, the rest sent now."""
        if ticket >= _LOCAL or (ticket == 0 and self._local is not None):
            if self._local is not None:
                self._local.note(
                    ticket - _LOCAL if ticket else 0,
                    failed=failed,
                    slow=slow,
                    retry_after=retry_after,
                )
            return
        if ticket == 0 and not failed:
            if not self._ok and not self._slow:
                self._buffered_at = self._clock.now()
                self._flush_later()
            self._ok += 1
            self._slow += slow
            if self._clock.now() - self._buffered_at >= self._store.flush_every:
                await self._flush(fail=0, retry_after=None)
            return
        if ticket == 0:
            await self._flush(fail=1, retry_after=retry_after)
            return
        await self._run("record", ticket=ticket, fail=int(failed), retry_after=retry_after)

    async def release(self, ticket: int) -> None:
        """Free a probe's slot (the call ended without a verdict)."""
        if ticket >= _LOCAL:
            if self._local is not None:
                await self._local.release(ticket - _LOCAL)
        elif ticket:
            await self._run("release", ticket=ticket)

    async def flush(self) -> None:
        """Send the buffered successes now (e.g. before a process exits)."""
        if self._ok and self._local is None:
            await self._flush(fail=0, retry_after=None)

    # -- plumbing -----------------------------------------------------------------------

    def _flush_later(self) -> None:
        """Send the buffer `flush_every` from now, even if no other call comes.

        The others sharing the breaker must see these successes, or its window counts the
        failures only (and trips early).
        """
        if self._flush_timer is None:
            due = self._clock.now() + self._store.flush_every
            self._flush_timer = self._clock.call_at(due, self._flush_due)

    def cancel_flush(self) -> None:
        """Call off the timed flush, if one is armed (the store is closing)."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None

    def _flush_due(self) -> None:
        self._flush_timer = None
        if self._ok:
            task = asyncio.get_running_loop().create_task(self.flush())
            self._store._flushing.add(task)  # noqa: SLF001 - the store keeps them alive
            task.add_done_callback(self._store._flushing.discard)  # noqa: SLF001

    async def _flush(self, *, fail: int, retry_after: float | None) -> None:
        ok, slow = self._ok, self._slow
        self._ok = self._slow = 0
        await self._run("record", ok=ok, slow=slow, fail=fail, retry_after=retry_after)

    async def _run(
        self,
        op: str,
        *,
        ticket: int = 0,
        ok: int = 0,
        slow: int = 0,
        fail: int = 0,
        retry_after: float | None = None,
    ) -> list[Any] | None:
        jitter = self.policy.open_jitter
        args = (
            self._key,
            op,
            str(ticket),
            str(ok),
            str(slow),
            str(fail),
            str(round((retry_after or 0.0) * 1000)),
            repr(self._rng.uniform(1 - jitter, 1 + jitter)),
            *self._policy_args,
        )
        # Bounded by the caller's deadline too: a total timeout publishes its deadline
        # without a timer of its own (`DeadlineMark`), so no wait may outlast it.
        left = time_left(self._clock)
        try:
            if left is not None and left < self._store.timeout:
                if left <= 0:
                    raise DeadlineExceeded("the deadline passed before the breaker", timeout=0.0)
                async with asyncio.timeout(left):
                    reply: list[Any] = await self._store.script()(args=args)
            else:
                reply = await self._store.script()(args=args)
        except TimeoutError as exc:
            if isinstance(exc, DeadlineExceeded) or left is None or left >= self._store.timeout:
                raise
            raise DeadlineExceeded(
                "the deadline passed while the breaker asked Redis", timeout=left
            ) from None
        except RedisError as exc:
            self._fall_back(exc)
            return None
        verdict, state, wait, old, reason, open_for = (
            _text(reply[0]),
            _text(reply[2]),
            int(reply[3]),
            _text(reply[4]),
            _text(reply[5]),
            int(reply[6]),
        )
        now = self._clock.now()
        seen = self._state  # as this process last knew it
        self._state = _state(state)
        self._seen_at = now
        if self._state == "open":
            self._open_until = now + max(wait, open_for, 0) / 1000
        if old:
            emit(
                BreakerStateChanged(
                    source=self.name,
                    old=_state(old),
                    new=self._state,
                    reason=reason,
                    open_for=open_for / 1000 if open_for >= 0 else None,
                )
            )
        elif seen != self._state:
            # Another process moved it: said here too, or this process's subscribers (its
            # `firebreak_circuit_state`) would keep the state it last made, open for good.
            emit(
                BreakerStateChanged(
                    source=self.name,
                    old=seen,
                    new=self._state,
                    reason="changed by another process",
                    open_for=None,
                )
            )
        return [verdict, reply[1], state, wait]

    def _fall_back(self, exc: RedisError) -> None:
        self._ok = self._slow = 0
        self._local_since = self._clock.now()
        if self._local is not None:
            return
        self._local = LocalBreakerState(self.name, self.policy, clock=self._clock, rng=self._rng)
        if self._attempts is not None:
            self._local.expect_attempts(self._attempts)
        reason = f"redis unreachable: {type(exc).__name__}: {exc}".splitlines()[0]
        log.warning("breaker %r falls back to a local state (%s)", self.name, reason)
        emit(BreakerBackendChanged(source=self.name, backend="local", reason=reason))

    async def _local_or_retry(self) -> LocalBreakerState | None:
        local = self._local
        if local is None or self._clock.now() - self._local_since < self._store.retry_redis_after:
            return local
        async with self._lock:  # one caller probes Redis; the others stay local meanwhile
            if self._local is None:
                return None
            self._local_since = self._clock.now()
            try:
                await self._store.ping()
            except RedisError:
                return self._local
            self._local = None
            self._seen_at = -float("inf")
            emit(BreakerBackendChanged(source=self.name, backend="redis", reason="redis is back"))
            return None


def _lease_ms(policy: BreakerPolicy, attempts: float | None) -> str:
    return str(max(1, round(lease_of(policy, attempts) * 1000)))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _state(text: str) -> State:
    return "open" if text == "open" else "half_open" if text == "half_open" else "closed"


def redis_breakers(
    url: str,
    *,
    prefix: str = "firebreak",
    policy: BreakerPolicy | None = None,
    clock: Clock = system_clock,
) -> BreakerRegistry:
    """A `BreakerRegistry` whose breakers are shared through Redis at `url`.

    Its connection is closed with the process; to close it earlier, build the registry
    yourself: ``BreakerRegistry(store=RedisBreakerStore(url))`` and ``await
    store.aclose()``.
    """
    return BreakerRegistry(
        policy=policy, clock=clock, store=RedisBreakerStore(url, prefix=prefix, clock=clock)
    )
