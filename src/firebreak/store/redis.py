"""`RedisStore`: runs, steps, leases and queues in Redis, for short runs shared by many hosts.

Every write that changes more than one key, and every fenced write, is one Lua script run
by the server as a unit, so fencing tokens and first-commit-wins hold across processes; a
step commit is one script run, one round trip, which concurrent callers share: script calls
made while one is in flight leave together as one pipeline, and the begins, step commits
and finishes among them as one call of a script that runs each in turn
(`_redis_pipeline`). Reads are one round trip too (a script or a ``MULTI`` pipeline); a
bus worker's check before each task (`get_lease_and_step`) is an operation of that same
script call, so concurrent checks share round trips (and script calls) as well. A commit
can carry commands to run after it, only if it is the first (`commit_step_then`): a Redis
bus on the same server replies and acks that way, in the commit's own script.

A Redis store is only as durable as the server's persistence: with ``appendonly yes`` and
``appendfsync always`` an acknowledged commit survives a crash of the server; with no
persistence a restart loses everything. `setup` logs a warning (once per process and
URL) when the server persists nothing.

Finished runs (succeeded, degraded) expire `finished_ttl` after they finish, with their
steps and shared state; failed (dead-lettered) runs are kept unless `failed_ttl` says
otherwise; dead-letter and review entries are kept until dropped or resolved.

Modules: this one is the store (lifecycle, runs, leases, steps and shared state); its
dead-letter and review queues are in ``_redis_queues`` (a base class), the Lua scripts in
``_redis_scripts``, their shared round trips in ``_redis_pipeline``, the records' encoding
in ``_redis_codec``, and reaching the server (URL, pool, schema check, one-line errors) in
``_redis_connect``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Mapping, Sequence
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from firebreak._lifecycle import SetupClose
from firebreak._urls import shown
from firebreak.errors import LeaseHeld, StaleLease, StateConflict, StoreError
from firebreak.store import _redis_codec as codec
from firebreak.store import _redis_connect as connect
from firebreak.store import _redis_scripts as lua
from firebreak.store import _rules
from firebreak.store._redis_pipeline import AutoPipeline
from firebreak.store._redis_queues import RedisQueues
from firebreak.store.base import (
    JSON,
    STEP_TRANSITIONS,
    Lease,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WallClock,
    default_clock,
    seconds,
)

__all__ = ["SCHEMA_VERSION", "RedisStore", "from_url"]

SCHEMA_VERSION = 2
"""The key layout this firebreak writes; a store marked newer is refused, an older one
upgraded in place (2: review items indexed by run)."""

_COLLECT_PAGE = 500
"""Records one listing script call reads (`_collect`): bounds how long it blocks the server."""

_UPGRADE_CHUNK = 1_000
"""Review items a schema-upgrade script call indexes: bounds how long it blocks the server."""

DEFAULT_FINISHED_TTL = 7 * 24 * 3600.0
log = logging.getLogger("firebreak.store.redis")
_warned: set[str] = set()
_STEP_KEYS = ("s", "o", "a", "e", "d", "c")
_HOT = {"BEGIN_RUN": "b", "COMMIT_STEP": "c", "FINISH_RUN": "f", "LEASE_AND_STEP": "l"}
"""Scripts whose calls run as operations of ``HOT_BATCH`` (`AutoPipeline.hot`)."""
T = TypeVar("T")


def from_url(url: str, *, clock: WallClock = default_clock) -> RedisStore:
    """Build a store from ``redis[s]://[user:pass@]host[:port][/db][?prefix=..&finished_ttl=..]``.

    ``finished_ttl`` and ``failed_ttl`` are seconds, or ``none`` for never.
    Other query options go to redis-py unchanged.
    """
    rest, prefix, ttls = connect.split_url(url)
    return RedisStore(
        rest,
        prefix=prefix,
        finished_ttl=ttls.get("finished_ttl", DEFAULT_FINISHED_TTL),
        failed_ttl=ttls.get("failed_ttl"),
        clock=clock,
    )


# The old statuses from which a step may move to each new status (for UPDATE_STEP).
_ALLOWED_FROM = {
    new: " ".join(sorted(str(old) for old, news in STEP_TRANSITIONS.items() if new in news))
    for new in StepStatus
}


class RedisStore(RedisQueues, SetupClose):
    """A `CheckpointStore` in Redis (redis-py asyncio); build with ``open_store("redis://…")``.

    Example:
        >>> async with RedisStore("redis://localhost:6379/0", prefix="billing") as store:
        ...     run, created = await store.create_run("inv-42", "invoice", {"id": 42})

    Args:
        url: ``redis://`` or ``rediss://`` URL as redis-py reads it.
        prefix: every key starts with ``<prefix>:``; stores with other prefixes share a
            server without seeing each other, unless one prefix is another's followed by
            ``:`` (``billing`` and ``billing:eu`` overlap: pick ``billing-eu``).
        finished_ttl: seconds (or a timedelta) a succeeded or degraded run is kept after
            it finished; ``None`` keeps it forever.
        failed_ttl: the same for failed (dead-lettered) runs; default ``None``: kept.
        clock: wall clock for timestamps and lease expiry; tests inject their own.
        max_connections: connections in the pool; more concurrent calls wait for one.
    """

    def __init__(
        self,
        url: str,
        *,
        prefix: str = "firebreak",
        finished_ttl: float | timedelta | None = DEFAULT_FINISHED_TTL,
        failed_ttl: float | timedelta | None = None,
        clock: WallClock = default_clock,
        max_connections: int = 32,
    ) -> None:
        if urlsplit(url).scheme.lower() not in {"redis", "rediss", "unix"}:
            raise ValueError(f"RedisStore needs a redis:// or rediss:// URL, got {shown(url)!r}")
        if not prefix:
            raise ValueError("prefix must not be empty")
        self.url = url
        self.prefix = prefix
        self.clock = clock
        if max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {max_connections!r}")
        self.max_connections = max_connections
        self._finished_ms = codec.ttl_ms(finished_ttl)
        self._failed_ms = codec.ttl_ms(failed_ttl)
        self.where = connect.where(url)
        """``host:port/db``, as error messages name the server."""
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._pipeline: AutoPipeline | None = None
        self._setup_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"RedisStore({self.where!r}, prefix={self.prefix!r})"

    # -- lifecycle ----------------------------------------------------------------------

    async def setup(self) -> None:
        """Connect, check the schema version, warn if the server persists nothing.

        Raises:
            StoreError: the server cannot be reached (one line naming it).
            StoreCorrupt: the prefix holds data of a newer firebreak, or not firebreak's.
        """
        async with self._setup_lock:
            if self._client is not None:
                return
            client = connect.open_client(self.url, max_connections=self.max_connections)
            try:
                await self._check(client)
            except BaseException:
                await client.aclose()
                raise
            self._client = client
            for name in lua.__all__:
                self._scripts[name] = client.register_script(getattr(lua, name))
            self._pipeline = AutoPipeline(
                client, self._error, hot=self._scripts["HOT_BATCH"], prefix=self.prefix
            )

    async def _check(self, client: aioredis.Redis) -> None:
        written = await connect.check_schema(
            client, prefix=self.prefix, where=self.where, version=SCHEMA_VERSION
        )
        if written < SCHEMA_VERSION:
            await self._upgrade(client)
        if self.url not in _warned:
            _warned.add(self.url)
            if await connect.persists(client, self.where) is False:
                log.warning(
                    "redis %s persists nothing (appendonly no, no save points): runs are lost"
                    " if the server restarts; set appendonly yes for a durable store",
                    self.where,
                )

    async def _upgrade(self, client: aioredis.Redis) -> None:
        """Schema 1 -> 2: index the review items by run, a chunk per script call."""
        index = client.register_script(lua.INDEX_REVIEWS)
        start, read = 0, _UPGRADE_CHUNK
        try:
            while read == _UPGRADE_CHUNK:
                read = int(await index(args=[self.prefix, start, _UPGRADE_CHUNK]))
                start += read
        except RedisError as exc:
            raise connect.translate(self.where, exc) from None

    async def close(self) -> None:
        """Close the connection pool; idempotent."""
        pipeline, self._pipeline = self._pipeline, None
        if pipeline is not None:
            await pipeline.close()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def destroy(self) -> None:
        """Delete every key under this store's prefix (tests use it to clean up)."""
        await self._do(connect.delete_prefix(self._need(), self.prefix))

    # -- plumbing -----------------------------------------------------------------------

    def _need(self) -> aioredis.Redis:
        if self._client is None:
            raise StoreError("RedisStore is not open: call setup() or use `async with`")
        return self._client

    def _error(self, exc: RedisError) -> StoreError:
        return connect.translate(self.where, exc)

    async def _do(self, op: Awaitable[T]) -> T:
        try:
            return await op
        except RedisError as exc:
            raise self._error(exc) from None

    async def _eval(self, name: str, *args: str | int | float) -> Any:
        self._need()
        pipeline = self._pipeline
        assert pipeline is not None  # noqa: S101  -- set together with the client
        # Concurrent calls share round trips (see `_redis_pipeline`); the hot writes of a
        # run also share one script call.
        kind = _HOT.get(name)
        if kind is not None:
            return await pipeline.hot([kind, *map(str, args)])
        return await pipeline.call(self._scripts[name], [self.prefix, *args])

    def _fence_args(self, lease: Lease) -> tuple[str, str, str]:
        return lease.run_id, lease.owner, str(lease.token)

    @staticmethod
    def _fenced(lease: Lease, reply: Sequence[Any]) -> None:
        if reply[0] == "missing":
            raise KeyError(lease.run_id)
        if reply[0] == "stale":
            raise StaleLease(lease.run_id, token=lease.token)

    async def _collect(
        self, index: str, prefix: str, skip: int, mode: str, limit: int, *, upto: float = 0.0
    ) -> list[dict[str, str]]:
        """Up to `limit` (-1: all) records of `index`, a page per script call.

        A script runs alone on the server: one reading a whole index of many thousand runs
        or dead letters would stall every other client, step commits included. Between
        pages the index may change: a record seen twice (shifted by an insert) is kept once;
        one moved ahead of the cursor is missed by this listing, as by any paged one.
        """
        self._need()
        script, hashes = self._scripts["COLLECT"], f"{self.prefix}:{prefix}"
        rows: list[dict[str, str]] = []
        seen: set[str] = set()
        start = 0
        while start >= 0 and (limit < 0 or len(rows) < limit):
            page = _COLLECT_PAGE if limit < 0 else min(_COLLECT_PAGE, limit - len(rows))
            args: list[str | int] = [hashes, skip, mode, page, repr(upto), start]
            start, found = await self._do(script(keys=[index], args=args))
            for flat in found:
                row = codec.pairs(flat)
                key = row.get("member") or row["id"]  # runs / dead letters and reviews
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
        return rows

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input, named as on RunRecord
    ) -> tuple[RunRecord, bool]:
        """Get the run, or create it as pending; the bool says whether it was created."""
        encoded = _rules.dumps(input)
        created, flat = await self._eval(
            "CREATE_RUN", run_id, workflow, encoded, repr(self.clock())
        )
        return codec.run(codec.pairs(flat), run_id), bool(created)

    async def begin_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input
        *,
        owner: str,
        ttl: float,
    ) -> tuple[RunRecord, bool, Lease | None]:
        """Get or create the run, take its lease and mark it running: one script, one trip.

        `SupportsBeginFinish`: no lease (``None``) for a finished run or another workflow's;
        `LeaseHeld` if another owner holds a live lease.
        """
        duration = seconds(ttl)
        encoded = _rules.dumps(input)
        now = self.clock()
        expires = now + duration
        reply = await self._eval(
            "BEGIN_RUN", run_id, workflow, encoded, repr(now), owner, repr(expires)
        )
        created = bool(reply[0])
        if reply[1] == "held":
            raise LeaseHeld(run_id, owner=str(reply[2]), expires_at=float(reply[3]))
        if reply[1] == "none":
            return codec.run(json.loads(reply[2]), run_id), created, None
        lease = Lease(run_id=run_id, owner=owner, token=int(reply[2]), expires_at=expires)
        return codec.run(json.loads(reply[3]), run_id), created, lease

    async def finish_run(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """`set_run_status` and `release_lease` in one script (fenced; `SupportsBeginFinish`)."""
        reply = await self._status_reply(
            "FINISH_RUN", lease, status, result=result, error=error, resume_at=resume_at
        )
        return codec.run(json.loads(reply[1]), lease.run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None``."""
        h = codec.strs(await self._do(self._need().hgetall(f"{self.prefix}:run:{run_id}")))
        return codec.run(h, run_id) if h else None

    async def run_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Up to `limit` run ids starting with `prefix`, in id order (`SupportsRunIdPrefix`).

        A scan of the runs index (members ``<16-digit counter>:<run_id>``): for the CLI's
        short ids, not for a hot path.
        """
        found: set[str] = set()
        pattern = f"{'?' * 16}:{connect.glob_escape(prefix)}*"

        async def scan() -> None:
            client = self._need()
            async for member, _ in client.zscan_iter(
                f"{self.prefix}:runs", match=pattern, count=1000
            ):
                run_id = str(member)[17:]
                # The index keeps an expired run until a later write sweeps it: live only.
                if run_id not in found and await client.exists(f"{self.prefix}:run:{run_id}"):
                    found.add(run_id)
                    if len(found) >= limit:
                        return

        if limit > 0:
            await self._do(scan())
        return sorted(found)[:limit]

    async def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Return up to `limit` runs, newest first, optionally filtered (`_collect` pages)."""
        wanted = None if status is None else RunStatus(status)
        index = f"{self.prefix}:runs"
        if workflow is not None and wanted is not None:
            index += f":ws:{wanted}:{workflow}"
        elif workflow is not None:
            index += f":w:{workflow}"
        elif wanted is not None:
            index += f":s:{wanted}"
        if limit <= 0:
            return []
        rows = await self._collect(index, "run:", 17, "desc", limit)
        return [codec.run(h, codec.member_id(h)) for h in rows]

    async def set_run_status(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """Set the run's status, result, error and resume time (fenced by `lease`).

        A succeeded or degraded run starts expiring (`finished_ttl`), a failed one
        too if `failed_ttl` is set; any other status keeps it.
        """
        reply = await self._status_reply(
            "SET_RUN_STATUS", lease, status, result=result, error=error, resume_at=resume_at
        )
        return codec.run(codec.pairs(reply[1]), lease.run_id)

    async def _status_reply(
        self,
        script: str,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None,
        error: dict[str, Any] | None,
        resume_at: float | None,
    ) -> Any:
        """Run a status-setting script (fenced); return its ``{'ok', run}`` reply."""
        new = RunStatus(status)
        reply = await self._eval(
            script,
            *self._fence_args(lease),
            str(new),
            _rules.dumps(result),
            _rules.dumps(error),
            "" if resume_at is None else repr(float(resume_at)),
            repr(self.clock()),
            self._ttl(new),
        )
        self._fenced(lease, reply)
        return reply

    def _ttl(self, status: RunStatus) -> str:
        """Milliseconds a run with `status` keeps its keys ('' = for good)."""
        if status in {RunStatus.SUCCEEDED, RunStatus.DEGRADED}:
            return self._finished_ms
        if status is RunStatus.FAILED:
            return self._failed_ms
        return ""

    async def due_runs(self, now: float) -> list[RunRecord]:
        """Return paused runs whose ``resume_at <= now``, soonest first."""
        rows = await self._collect(f"{self.prefix}:due", "run:", 17, "upto", -1, upto=now)
        return [codec.run(h, codec.member_id(h)) for h in rows if h["status"] == RunStatus.PAUSED]

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | timedelta) -> Lease:
        """Take the run's lease if free, expired or already `owner`'s; else `LeaseHeld`."""
        duration = seconds(ttl)
        now = self.clock()
        expires = now + duration
        reply = await self._eval("ACQUIRE", run_id, owner, repr(now), repr(expires))
        if reply[0] == "missing":
            raise KeyError(run_id)
        if reply[0] == "held":
            raise LeaseHeld(run_id, owner=str(reply[1]), expires_at=float(reply[2]))
        return Lease(run_id=run_id, owner=owner, token=int(reply[1]), expires_at=expires)

    async def renew_lease(self, lease: Lease, ttl: float | timedelta) -> Lease:
        """Extend `lease` by `ttl` from now; `StaleLease` if another owner took the run."""
        expires = self.clock() + seconds(ttl)
        reply = await self._eval("RENEW", *self._fence_args(lease), repr(expires))
        self._fenced(lease, reply)
        return Lease(run_id=lease.run_id, owner=lease.owner, token=lease.token, expires_at=expires)

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up; a no-op if it is no longer current."""
        await self._eval("RELEASE", *self._fence_args(lease))

    # -- steps --------------------------------------------------------------------------

    async def commit_step(self, lease: Lease, step: StepRecord) -> bool:
        """Record a step result in one round trip; ``False`` if already committed."""
        return await self.commit_step_then(lease, step, ())

    async def commit_step_then(
        self, lease: Lease, step: StepRecord, then: Sequence[Sequence[str]]
    ) -> bool:
        """`commit_step`, then the Redis commands `then` in the same script if it was first.

        `SupportsCommitThen`: a Redis bus on this server (`same_server`) hands the commands
        that reply to the orchestrator and ack the task. They run after the commit, only if
        it is the first, as part of the same script; one that fails fails the call
        (`StoreError`), though the commit stays (a script is not rolled back).
        """
        args = self._commit_args("c", lease, step)
        if then:
            args.append([list(command) for command in then])
        return await self._commit_hot(lease, args)

    async def commit_step_and_finish(
        self, lease: Lease, step: StepRecord, status: RunStatus | str, *, result: JSON = None
    ) -> bool:
        """`commit_step`, then the run's outcome if it was first, in one script.

        `SupportsCommitAndFinish`: `finish_run`'s update and lease release, one round trip.
        """
        new = RunStatus(status)
        args = self._commit_args("cf", lease, step)
        args += [str(new), _rules.dumps(result), "null", "", repr(self.clock()), self._ttl(new)]
        return await self._commit_hot(lease, args)

    def _commit_args(self, kind: str, lease: Lease, step: StepRecord) -> list[Any]:
        """``HOT_BATCH`` arguments of a step commit: kind, then COMMIT_STEP's after P."""
        _rules.check_same_run(lease, step.run_id)
        return [
            kind,
            *self._fence_args(lease),
            step.agent,
            str(step.status),
            _rules.dumps(step.output),
            str(step.attempts),
            "null" if step.error is None else _rules.dumps(step.error),
            "null" if step.degraded_reason is None else _rules.dumps(step.degraded_reason),
            repr(float(step.completed_at or self.clock())),
        ]

    async def _commit_hot(self, lease: Lease, args: list[Any]) -> bool:
        self._need()
        pipeline = self._pipeline
        assert pipeline is not None  # noqa: S101  -- set together with the client
        reply = await pipeline.hot(args)
        self._fenced(lease, reply)
        return bool(reply[0] == "ok")

    def same_server(self, url: str) -> bool:
        """Whether `url` (a bus's, say) names this store's Redis server and database."""
        try:
            return connect.server(url) == connect.server(self.url)
        except ValueError:
            return False

    async def update_step(
        self,
        lease: Lease,
        run_id: str,
        agent: str,
        *,
        status: StepStatus | str,
        error: dict[str, Any] | None = None,
        output: JSON = ...,
    ) -> StepRecord:
        """Move a committed step along `STEP_TRANSITIONS` (fenced); ``output=...`` keeps it."""
        if run_id != lease.run_id:
            raise ValueError(f"step of run {run_id!r} updated under a lease on {lease.run_id!r}")
        new = StepStatus(status)
        keep = output is ...
        reply = await self._eval(
            "UPDATE_STEP",
            *self._fence_args(lease),
            agent,
            str(new),
            _rules.dumps(error),
            "1" if keep else "0",
            "" if keep else _rules.dumps(output),
            repr(self.clock()),
            "1" if new in _rules.RESEQUENCE else "0",
            _ALLOWED_FROM[new],
        )
        if reply[0] == "missing" and len(reply) == 1:
            # Either the run (fence) or the step is unknown: both are KeyError.
            raise KeyError(f"{run_id}/{agent}")
        self._fenced(lease, reply)
        if reply[0] == "transition":
            _rules.check_transition(run_id, agent, StepStatus(reply[1]), new)
        values = reply[1]
        return codec.step(run_id, agent, values[:6], float(values[6]))

    async def reset_steps(self, lease: Lease, agents: Sequence[str]) -> int:
        """Forget the committed steps of `agents` (fenced); returns how many there were."""
        reply = await self._eval("RESET_STEPS", *self._fence_args(lease), *agents)
        self._fenced(lease, reply)
        return int(reply[1])

    async def set_input(self, lease: Lease, input: JSON) -> None:  # noqa: A002 - the run's input
        """Replace the run's input (fenced)."""
        encoded = _rules.dumps(input)
        reply = await self._eval("SET_INPUT", *self._fence_args(lease), encoded, repr(self.clock()))
        self._fenced(lease, reply)

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Return the run's committed steps by agent name, in commit order (one round trip)."""
        pipe = self._need().pipeline(transaction=True)
        pipe.zrange(f"{self.prefix}:seqs:{run_id}", 0, -1, withscores=True)
        pipe.hgetall(f"{self.prefix}:steps:{run_id}")
        order, raw = await self._do(pipe.execute())
        fields = codec.strs(raw)
        steps: dict[str, StepRecord] = {}
        for agent, seq in order:
            values = [fields.get(f"{k}:{agent}") for k in _STEP_KEYS]
            steps[agent] = codec.step(run_id, agent, values, seq)
        return steps

    async def get_lease_and_step(
        self, run_id: str, agent: str
    ) -> tuple[Lease | None, StepRecord | None]:
        """The run's current lease and the agent's committed step (`SupportsLeaseAndStep`).

        One script, so one round trip that concurrent callers share (a worker's check
        before each task); ``None`` for a run gone or released, a step not committed.
        """
        reply = await self._eval("LEASE_AND_STEP", run_id, agent)
        owner, token, expires, values, seq = reply[0], reply[1], reply[2], reply[3:9], reply[9]
        lease = None
        if token is not None:  # else the run is gone
            lease = _rules.current_lease(run_id, owner, int(token), codec.num(expires))
        step = None if seq is None else codec.step(run_id, agent, values, float(seq))
        return lease, step

    # -- shared state -------------------------------------------------------------------

    async def get_state(self, run_id: str) -> tuple[int, dict[str, JSON]]:
        """Return the run's shared state and its version (``0, {}`` before any write)."""
        h = codec.strs(await self._do(self._need().hgetall(f"{self.prefix}:state:{run_id}")))
        return (int(h["v"]), _rules.loads(h["d"])) if h else (0, {})

    async def cas_state(
        self,
        run_id: str,
        expected_version: int,
        data: Mapping[str, JSON],
        *,
        lease: Lease | None = None,
    ) -> int:
        """Replace the state if still at `expected_version`, else raise `StateConflict`.

        With `lease`, fenced as a step commit is (`StaleLease`, `KeyError`).
        """
        encoded = _rules.dumps(dict(data))
        owner, token = "", ""  # not fenced
        if lease is not None:
            _rules.check_same_run(lease, run_id)
            owner, token = lease.owner, str(lease.token)
        reply = await self._eval("CAS_STATE", run_id, str(expected_version), encoded, owner, token)
        if lease is not None:
            self._fenced(lease, reply)
        if reply[0] == "conflict":
            raise StateConflict(run_id, expected=expected_version, actual=int(reply[1]))
        return int(reply[1])
