"""`RedisQueues`: the dead-letter and manual-review queues of a `RedisStore`.

A base class of `RedisStore`, on its plumbing (`_Host`): each write is one script
(``DLQ_PUT``, ``DLQ_DROP``, ``REVIEW_PUT``, ``REVIEW_RESOLVE``), each list one read of an
index, a page per script call (``COLLECT``). Entries are kept until dropped or resolved.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

import redis.asyncio as aioredis

from firebreak.errors import StoreError
from firebreak.store import _redis_codec as codec
from firebreak.store import _rules
from firebreak.store.base import JSON, DeadLetter, ReviewItem, StepRecord, WallClock

__all__ = ["RedisQueues"]

T = TypeVar("T")


class _Host(Protocol):
    """What the queues use of `RedisStore`."""

    prefix: str
    clock: WallClock

    def _need(self) -> aioredis.Redis: ...

    async def _do(self, op: Awaitable[T]) -> T: ...

    async def _eval(self, name: str, *args: str | int | float) -> Any: ...

    async def _collect(
        self, index: str, prefix: str, skip: int, mode: str, limit: int, *, upto: float = 0.0
    ) -> list[dict[str, str]]: ...


class RedisQueues:
    """The dead-letter and manual-review queues (`CheckpointStore`'s) of a `RedisStore`."""

    # -- dead-letter queue --------------------------------------------------------------

    async def dlq_put(
        self: _Host,
        *,
        run_id: str,
        workflow: str,
        reason: str,
        error: dict[str, Any] | None = None,
        input: JSON = None,  # noqa: A002  -- the run's input, named as on RunRecord
        steps: Mapping[str, StepRecord] | None = None,
    ) -> str:
        """Put a failed run in the dead-letter queue (one entry per run; replaced)."""
        snapshot = None if steps is None else {k: _rules.step_to_dict(s) for k, s in steps.items()}
        reply = await self._eval(
            "DLQ_PUT",
            _rules.new_id(),
            run_id,
            workflow,
            reason,
            _rules.dumps(error),
            _rules.dumps(input),
            _rules.dumps(snapshot),
            repr(self.clock()),
        )
        return str(reply)

    async def dlq_list(self: _Host, workflow: str | None = None) -> list[DeadLetter]:
        """Return the entries, oldest first."""
        index = f"{self.prefix}:dlq" + ("" if workflow is None else f":w:{workflow}")
        return [codec.dead(h) for h in await self._collect(index, "dlq:e:", 0, "asc", -1)]

    async def dlq_get(self: _Host, id: str) -> DeadLetter | None:  # noqa: A002  -- record field
        """Return the entry, or ``None``."""
        h = codec.strs(await self._do(self._need().hgetall(f"{self.prefix}:dlq:e:{id}")))
        return codec.dead(h) if h else None

    async def dlq_of_run(self: _Host, run_id: str) -> DeadLetter | None:
        """Return the run's entry (a run has at most one), or ``None``."""
        entry_id = await self._do(self._need().hget(f"{self.prefix}:dlq:byrun", run_id))
        if entry_id is None:
            return None
        key = entry_id if isinstance(entry_id, str) else entry_id.decode()
        h = codec.strs(await self._do(self._need().hgetall(f"{self.prefix}:dlq:e:{key}")))
        return codec.dead(h) if h else None  # dropped between the two reads

    async def dlq_drop(self: _Host, id: str) -> bool:  # noqa: A002  -- record field name
        """Remove the entry; ``False`` if it was not there."""
        return bool(await self._eval("DLQ_DROP", id))

    async def dlq_size(self: _Host, workflow: str | None = None) -> int:
        """Count the entries."""
        index = f"{self.prefix}:dlq" + ("" if workflow is None else f":w:{workflow}")
        return int(await self._do(self._need().zcard(index)))

    # -- manual-review queue ------------------------------------------------------------

    async def review_put(
        self: _Host,
        *,
        run_id: str,
        workflow: str,
        agent: str,
        reason: str,
        suggestions: Sequence[JSON] = (),
        context: JSON = None,
    ) -> str:
        """Queue a decision for a person; an open item for the same step is reused."""
        reply = await self._eval(
            "REVIEW_PUT",
            _rules.new_id(),
            run_id,
            workflow,
            agent,
            reason,
            _rules.dumps(list(suggestions)),
            _rules.dumps(context),
            repr(self.clock()),
        )
        return str(reply)

    async def review_list(self: _Host, status: str | None = "open") -> list[ReviewItem]:
        """Return items with `status` (all if ``None``), oldest first."""
        wanted = _rules.review_status(status)
        index = f"{self.prefix}:rv:{'all' if wanted is None else wanted}"
        return [codec.review(h) for h in await self._collect(index, "rv:e:", 0, "asc", -1)]

    async def review_get(self: _Host, id: str) -> ReviewItem | None:  # noqa: A002  -- record field
        """Return the item, or ``None``."""
        h = codec.strs(await self._do(self._need().hgetall(f"{self.prefix}:rv:e:{id}")))
        return codec.review(h) if h else None

    async def review_of_run(self: _Host, run_id: str) -> list[ReviewItem]:
        """Return the run's items, open and resolved, oldest first."""
        index = f"{self.prefix}:rv:run:{run_id}"
        return [codec.review(h) for h in await self._collect(index, "rv:e:", 0, "asc", -1)]

    async def review_resolve(self: _Host, id: str, value: JSON) -> ReviewItem:  # noqa: A002
        """Record the person's answer; `KeyError` if unknown, `StoreError` if resolved."""
        reply = await self._eval("REVIEW_RESOLVE", id, _rules.dumps(value), repr(self.clock()))
        if reply[0] == "missing":
            raise KeyError(id)
        if reply[0] == "resolved":
            raise StoreError(f"review item {id!r} is already resolved")
        return codec.review(codec.pairs(reply[1]))

    async def review_size(self: _Host) -> int:
        """Count the open items."""
        return int(await self._do(self._need().zcard(f"{self.prefix}:rv:open")))
