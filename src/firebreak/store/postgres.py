"""`PostgresStore`: the `CheckpointStore` on PostgreSQL, for long runs and audit trails.

psycopg 3 (async) with a connection pool; install with ``pip install 'firebreak[postgres]'``.
Build it from a URL and set it up explicitly::

    async with open_store("postgresql://app@db.internal/ops?schema=firebreak") as store:
        ...

What it adds over SQLite:

* **Versioned migrations** run by `setup` in one transaction under an advisory lock (two
  processes may set up at once); a schema from a newer firebreak is refused.
* **Group commit**: concurrent `begin_run`, `commit_step` and `finish_run` calls, of any
  runs, share one statement and one transaction (see `_pg_batch`); each write's lease check
  runs in that transaction, on the run's locked row.
* **An audit trail**: every transition (run created, status change, lease
  acquired/renewed/released, step committed/updated/reset, DLQ put/drop, review
  put/resolve) is appended to ``audit`` with who, when and what; `audit_log` reads it.
* **LISTEN/NOTIFY**: `wait_for_step` and `subscribe` learn of commits made by any process
  without polling.

Failures of the server or the network surface as `StoreError` with one line naming the
server, e.g. ``postgres 127.0.0.1:5432/ops: connection failed: connection to server at
"127.0.0.1", port 5432 failed: Connection refused Is the server running on that host…`` or
``postgres db:5432/ops: no connection within 10 s (is the server up?)``.

Modules: this one is the store (lifecycle and the `CheckpointStore` methods); the SQL is
in ``_pg_ops`` (runs, leases, steps, state) and ``_pg_queues`` (dead letters, reviews,
audit), the migrations in ``_pg_schema``, the hot writes in ``_pg_apply`` and their group
commit in ``_pg_batch``, ``LISTEN`` in ``_pg_listen``, and reaching the server (connection
string, pool, one-line errors) in ``_pg_connect``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Concatenate, ParamSpec, TypeVar

import psycopg
from psycopg import sql
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from firebreak._lifecycle import SetupClose
from firebreak._urls import split_options
from firebreak.errors import StoreError
from firebreak.store import _pg_apply as apply
from firebreak.store import _pg_connect as connect
from firebreak.store import _pg_ops as ops
from firebreak.store import _pg_queues as queues
from firebreak.store import _pg_schema, _rules
from firebreak.store._pg_batch import GroupCommitter
from firebreak.store._pg_listen import RESYNC, Listener
from firebreak.store.base import (
    JSON,
    DeadLetter,
    Lease,
    ReviewItem,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    WallClock,
    default_clock,
    seconds,
)

__all__ = ["PostgresStore", "from_url"]

_P = ParamSpec("_P")
_T = TypeVar("_T")


def from_url(url: str, *, clock: WallClock = default_clock) -> PostgresStore:
    """Build (not connect) a store from ``postgresql://`` or ``postgres://`` URL.

    ``?schema=NAME`` picks the schema (default ``firebreak``) and is removed before
    connecting; every other query option goes to libpq (``sslmode``, ``connect_timeout``…).

    Example:
        >>> store = from_url("postgresql://app@db/ops?schema=billing&sslmode=require")
    """
    ours, stripped = split_options(url, ("schema",))
    if "schema" in ours:
        return PostgresStore(stripped, schema=ours["schema"], clock=clock)
    return PostgresStore(stripped, clock=clock)


class PostgresStore(SetupClose):
    """A `CheckpointStore` in a PostgreSQL schema (pooled psycopg 3, group commit, audit).

    Nothing connects until `setup` (or ``async with``).

    Example:
        >>> async with PostgresStore("postgresql://app@db/ops", schema="billing") as store:
        ...     run, created = await store.create_run("inv-42", "invoice", {"id": 42})

    Args:
        url: a libpq URL (``postgresql://user:password@host:port/dbname?sslmode=…``).
        schema: the schema holding the tables; lower-case letters, digits, ``_``.
        clock: wall clock for timestamps and lease expiry; tests inject their own.
        pool_size: most connections in the pool.
        timeout: seconds an operation waits for a connection (say, while the server
            restarts) before it fails with `StoreError`.
        group_commit: batch concurrent `begin_run`, `commit_step` and `finish_run` calls
            into shared transactions; ``False`` gives each its own (for measurement).
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str = "firebreak",
        clock: WallClock = default_clock,
        pool_size: int = 10,
        timeout: float = 10.0,
        group_commit: bool = True,
    ) -> None:
        if not connect.SCHEMA_NAME.fullmatch(schema):
            raise ValueError(
                f"schema must be 1-53 lower-case letters, digits or '_' (not starting with a"
                f" digit), got {schema!r}"
            )
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive, got {timeout!r}")
        self._conninfo, where = connect.conninfo(url, schema=schema, timeout=timeout)
        self.schema = schema
        self.clock = clock
        self.pool_size = pool_size
        self.timeout = timeout
        self.group_commit = group_commit
        self.channel = f"firebreak_{schema}"
        """The ``NOTIFY`` channel of this schema."""
        self.where = where
        """Names the server in messages (never the password)."""
        self._pool: AsyncConnectionPool[Any] | None = None
        self._committer: GroupCommitter | None = None
        self._listener: Listener | None = None
        self._setup_lock = asyncio.Lock()

    def __repr__(self) -> str:
        return f"PostgresStore({self.where!r}, schema={self.schema!r})"

    # -- lifecycle ----------------------------------------------------------------------

    async def setup(self) -> None:
        """Connect, create or migrate the schema, open the pool; idempotent.

        Raises:
            StoreError: the server cannot be reached or refuses the login.
            StoreCorrupt: the schema is foreign or was written by a newer firebreak.
        """
        async with self._setup_lock:
            if self._pool is not None:
                return
            try:
                conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
                async with conn:
                    await _pg_schema.migrate(conn, self.schema, self.where)
                pool = await connect.open_pool(
                    self._conninfo,
                    size=self.pool_size,
                    connect_within=self.timeout,
                    name=f"firebreak-{self.schema}",
                )
            except (psycopg.Error, PoolTimeout) as exc:
                raise self._error(exc) from exc
            self._pool = pool
            self._committer = GroupCommitter(pool, self._error)
            self._listener = Listener(self._conninfo, self.channel, self._error)

    async def close(self) -> None:
        """Apply queued commits, stop listening and close the pool; idempotent."""
        pool, committer, listener = self._pool, self._committer, self._listener
        self._pool, self._committer, self._listener = None, None, None
        if committer is not None:
            await committer.close()
        if listener is not None:
            await listener.close()
        if pool is not None:
            await pool.close()

    async def destroy(self) -> None:
        """Drop the schema and everything in it, then close. For tests and teardown."""
        await self.close()
        try:
            conn = await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True)
            async with conn:
                await conn.execute(
                    sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema))
                )
        except psycopg.Error as exc:
            raise self._error(exc) from exc

    # -- plumbing -----------------------------------------------------------------------

    def _error(self, exc: BaseException) -> BaseException:
        """Translate a driver or pool error into a one-line `StoreError` naming the server."""
        return connect.translate(exc, where=self.where, timeout=self.timeout)

    def _require_pool(self) -> AsyncConnectionPool[Any]:
        if self._pool is None:
            raise StoreError("PostgresStore is not open: call setup() or use `async with`")
        return self._pool

    async def _write(self, op: apply.Op) -> Any:
        """Apply a hot write: in a group commit, or alone if `group_commit` is off."""
        committer = self._committer
        if committer is None:
            self._require_pool()
        if not self.group_commit or committer is None:
            return await self._do(apply.apply_one, op)
        return await committer.submit(op)

    async def _do(
        self,
        fn: Callable[Concatenate[psycopg.AsyncConnection[Any], _P], Awaitable[_T]],
        *args: _P.args,
        **kwargs: _P.kwargs,
    ) -> _T:
        """Run `fn` on a pooled connection; driver and pool errors become `StoreError`."""
        pool = self._require_pool()
        try:
            async with pool.connection() as conn:
                return await fn(conn, *args, **kwargs)
        except (psycopg.Error, PoolTimeout) as exc:
            raise self._error(exc) from exc

    # -- runs ---------------------------------------------------------------------------

    async def create_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input, named as on RunRecord
    ) -> tuple[RunRecord, bool]:
        """Get the run, or create it as pending; the bool says whether it was created."""
        encoded = _rules.dumps(input)
        return await self._do(ops.create_run, run_id, workflow, encoded, self.clock())

    async def begin_run(
        self,
        run_id: str,
        workflow: str,
        input: JSON,  # noqa: A002  -- the run's input
        *,
        owner: str,
        ttl: float,
    ) -> tuple[RunRecord, bool, Lease | None]:
        """Get or create the run, take its lease and mark it running: one transaction.

        `SupportsBeginFinish`; pipelined, so one round trip. Audited like `create_run`,
        `acquire_lease` and `set_run_status`. `LeaseHeld` if another owner holds it.
        """
        op = apply.begin(
            run_id, workflow, _rules.dumps(input), owner=owner, now=self.clock(), ttl=seconds(ttl)
        )
        begun: tuple[RunRecord, bool, Lease | None] = await self._write(op)
        return begun

    async def finish_run(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """`set_run_status` and `release_lease` in one statement (fenced, audited).

        Rides in a group commit with other runs' writes, like `commit_step`.
        """
        update = _rules.RunUpdate.encode(status, result, error, resume_at, self.clock())
        run: RunRecord = await self._write(apply.finish(lease, update))
        return run

    async def get_run(self, run_id: str) -> RunRecord | None:
        """Return the run, or ``None``."""
        return await self._do(ops.get_run, run_id)

    async def run_ids_starting(self, prefix: str, *, limit: int = 2) -> list[str]:
        """Up to `limit` run ids starting with `prefix`, in id order (`SupportsRunIdPrefix`)."""
        return await self._do(ops.run_ids_starting, prefix, max(limit, 0))

    async def list_runs(
        self, *, workflow: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        """Return up to `limit` runs, newest first, optionally filtered."""
        wanted = None if status is None else RunStatus(status)
        return await self._do(ops.list_runs, workflow, wanted, max(limit, 0))

    async def set_run_status(
        self,
        lease: Lease,
        status: RunStatus | str,
        *,
        result: JSON | None = None,
        error: dict[str, Any] | None = None,
        resume_at: float | None = None,
    ) -> RunRecord:
        """Set the run's status, result, error and resume time (fenced by `lease`)."""
        update = _rules.RunUpdate.encode(status, result, error, resume_at, self.clock())
        return await self._do(ops.set_run_status, lease, update)

    async def due_runs(self, now: float) -> list[RunRecord]:
        """Return paused runs whose ``resume_at <= now``, soonest first."""
        return await self._do(ops.due_runs, now)

    # -- leases -------------------------------------------------------------------------

    async def acquire_lease(self, run_id: str, owner: str, ttl: float | timedelta) -> Lease:
        """Take the run's lease if free, expired or already `owner`'s; else `LeaseHeld`."""
        duration = seconds(ttl)
        return await self._do(ops.acquire_lease, run_id, owner, self.clock(), duration)

    async def renew_lease(self, lease: Lease, ttl: float | timedelta) -> Lease:
        """Extend `lease` by `ttl` from now; `StaleLease` if another owner took the run."""
        now = self.clock()
        return await self._do(ops.renew_lease, lease, now, now + seconds(ttl))

    async def release_lease(self, lease: Lease) -> None:
        """Give the lease up; a no-op if it is no longer current."""
        await self._do(ops.release_lease, lease, self.clock())

    # -- steps --------------------------------------------------------------------------

    async def commit_step(self, lease: Lease, step: StepRecord) -> bool:
        """Durably record a step result; ``False`` (and no change) if already committed.

        Concurrent calls share one transaction (group commit); each is still fenced by
        its own lease and judged on its own.
        """
        done: bool = await self._write(apply.commit(lease, step, self.clock()))
        return done

    async def commit_step_and_finish(
        self, lease: Lease, step: StepRecord, status: RunStatus | str, *, result: JSON = None
    ) -> bool:
        """`commit_step`, then the run's outcome if it was first (`SupportsCommitAndFinish`).

        One operation of a group commit (schema migration 4), audited as a commit and then
        a finish; one transaction fewer per run.
        """
        finish = _rules.RunUpdate.encode(status, result, None, None, self.clock())
        done: bool = await self._write(apply.commit(lease, step, self.clock(), finish))
        return done

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
        args = ops.StepUpdate(
            agent=agent,
            status=StepStatus(status),
            error=None if error is None else _rules.dumps(error),
            output=None if output is ... else _rules.dumps(output),
            now=self.clock(),
        )
        return await self._do(ops.update_step, lease, args)

    async def reset_steps(self, lease: Lease, agents: Sequence[str]) -> int:
        """Forget the committed steps of `agents` (fenced); returns how many there were."""
        return await self._do(ops.reset_steps, lease, list(agents), self.clock())

    async def set_input(self, lease: Lease, input: JSON) -> None:  # noqa: A002 - the run's input
        """Replace the run's input (fenced)."""
        encoded = _rules.dumps(input)
        await self._do(ops.set_input, lease, encoded, self.clock())

    async def get_steps(self, run_id: str) -> dict[str, StepRecord]:
        """Return the run's committed steps by agent name, in commit order."""
        return await self._do(ops.get_steps, run_id)

    async def get_lease_and_step(
        self, run_id: str, agent: str
    ) -> tuple[Lease | None, StepRecord | None]:
        """The run's current lease and the agent's committed step (`SupportsLeaseAndStep`).

        One statement, so one connection checkout and one round trip instead of two.
        """
        return await self._do(ops.get_lease_and_step, run_id, agent)

    # -- notifications ------------------------------------------------------------------

    def _require_listener(self) -> Listener:
        self._require_pool()
        assert self._listener is not None  # noqa: S101  -- set together with the pool
        return self._listener

    async def wait_for_step(
        self,
        run_id: str,
        agent: str,
        timeout: float,  # noqa: ASYNC109  -- the signature the message bus relies on
    ) -> StepRecord | None:
        """Return the step once any process has committed it; ``None`` after `timeout` s.

        Returns at once if it is already committed. Woken by ``NOTIFY``, not by polling:
        the ``LISTEN`` is in place before the first read, so no commit slips between.

        Example:
            >>> step = await store.wait_for_step("inv-42", "extract", timeout=30)
        """
        listener = self._require_listener()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        async with listener.watch(run_id, connect_within=self.timeout) as events:
            while True:
                step = await self._do(ops.get_step, run_id, agent)
                if step is not None:
                    return step
                while True:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        return None
                    try:
                        event = await asyncio.wait_for(events.get(), remaining)
                    except TimeoutError:
                        return None
                    if event is RESYNC or event == agent:
                        break

    async def subscribe(self, run_id: str) -> AsyncGenerator[str, None]:
        """Yield, as they happen, the agent of each step of `run_id` committed or changed.

        ``""`` means the run itself changed (created, status) or that events may have been
        missed while the connection was down: re-read the run. Stop by breaking out of the
        loop (or closing the iterator).

        Example:
            >>> async for agent in store.subscribe("inv-42"):
            ...     if agent == "post":
            ...         break
        """
        listener = self._require_listener()
        async with listener.watch(run_id, connect_within=self.timeout) as events:
            while True:
                event = await events.get()
                yield "" if event is RESYNC else event

    # -- shared state -------------------------------------------------------------------

    async def get_state(self, run_id: str) -> tuple[int, dict[str, JSON]]:
        """Return the run's shared state and its version (``0, {}`` before any write)."""
        return await self._do(ops.get_state, run_id)

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
        if lease is not None:
            _rules.check_same_run(lease, run_id)
        return await self._do(ops.cas_state, run_id, expected_version, encoded, lease)

    # -- dead-letter queue --------------------------------------------------------------

    async def dlq_put(
        self,
        *,
        run_id: str,
        workflow: str,
        reason: str,
        error: dict[str, Any] | None = None,
        input: JSON = None,  # noqa: A002  -- the run's input, named as on RunRecord
        steps: Mapping[str, StepRecord] | None = None,
    ) -> str:
        """Put a failed run in the dead-letter queue (one entry per run; replaced)."""
        params = {
            "id": _rules.new_id(),
            "run_id": run_id,
            "workflow": workflow,
            "reason": reason,
            "error": None if error is None else _rules.dumps(error),
            "input": _rules.dumps(input),
            "steps": None
            if steps is None
            else _rules.dumps({k: _rules.step_to_dict(s) for k, s in steps.items()}),
            "now": self.clock(),
        }
        return await self._do(queues.dlq_put, params)

    async def dlq_list(self, workflow: str | None = None) -> list[DeadLetter]:
        """Return the entries, oldest first."""
        return await self._do(queues.dlq_list, workflow)

    async def dlq_get(self, id: str) -> DeadLetter | None:  # noqa: A002  -- record field name
        """Return the entry, or ``None``."""
        return await self._do(queues.dlq_get, id)

    async def dlq_of_run(self, run_id: str) -> DeadLetter | None:
        """Return the run's entry (a run has at most one), or ``None``."""
        return await self._do(queues.dlq_of_run, run_id)

    async def dlq_drop(self, id: str) -> bool:  # noqa: A002  -- record field name
        """Remove the entry; ``False`` if it was not there."""
        return await self._do(queues.dlq_drop, id, self.clock())

    async def dlq_size(self, workflow: str | None = None) -> int:
        """Count the entries."""
        return await self._do(queues.dlq_size, workflow)

    # -- manual-review queue ------------------------------------------------------------

    async def review_put(
        self,
        *,
        run_id: str,
        workflow: str,
        agent: str,
        reason: str,
        suggestions: Sequence[JSON] = (),
        context: JSON = None,
    ) -> str:
        """Queue a decision for a person; an open item for the same step is reused."""
        params = {
            "id": _rules.new_id(),
            "run_id": run_id,
            "workflow": workflow,
            "agent": agent,
            "reason": reason,
            "suggestions": _rules.dumps(list(suggestions)),
            "context": _rules.dumps(context),
            "now": self.clock(),
        }
        return await self._do(queues.review_put, params)

    async def review_list(self, status: str | None = "open") -> list[ReviewItem]:
        """Return items with `status` (all if ``None``), oldest first."""
        return await self._do(queues.review_list, _rules.review_status(status))

    async def review_get(self, id: str) -> ReviewItem | None:  # noqa: A002  -- record field
        """Return the item, or ``None``."""
        return await self._do(queues.review_get, id)

    async def review_of_run(self, run_id: str) -> list[ReviewItem]:
        """Return the run's items, open and resolved, oldest first."""
        return await self._do(queues.review_of_run, run_id)

    async def review_resolve(self, id: str, value: JSON) -> ReviewItem:  # noqa: A002
        """Record the person's answer; `KeyError` if unknown, `StoreError` if resolved."""
        encoded = _rules.dumps(value)
        return await self._do(queues.review_resolve, id, encoded, self.clock())

    async def review_size(self) -> int:
        """Count the open items."""
        return await self._do(queues.review_size)

    # -- audit --------------------------------------------------------------------------

    async def audit_log(
        self, run_id: str | None = None, *, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Return audit entries, oldest first: ``id, at, actor, client, run_id, kind, what``.

        ``actor`` is the lease owner where a lease was involved; ``client`` the connection's
        ``application_name`` (``firebreak:<host>:<pid>`` unless the URL sets one).
        """
        return await self._do(queues.audit_log, run_id, max(limit, 0))
