"""Automatic pipelining of `RedisStore` scripts: many concurrent callers, one round trip.

Calls made in one turn of the event loop, or while a pipeline is in flight, leave together
as one non-transactional pipeline of ``EVALSHA`` commands (a lone call waits one loop turn
for company). Each script is
still atomic on the server and judged on its own: one caller's error (a script error) is
that caller's alone; a connection error reaches every caller of the batch.

Under 50 concurrent workflows this turns ~50 separate request/response exchanges, each
with its own pool checkout, socket write and wake-up, into one, which is most of the
client-side cost of a small script call in redis-py.

The hot writes (`hot`: a run's begin, step commits and finish) go further: those that
leave together are one call of ``HOT_BATCH`` whose arguments are one JSON array, not one
``EVALSHA`` each with a dozen arguments that redis-py encodes one by one in Python. Each
still runs as its own script would, and is judged on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError, ResponseError

from firebreak._futures import answer, fail

__all__ = ["MAX_BATCH", "AutoPipeline"]

MAX_BATCH = 512
"""Most commands in one pipeline: bounds the latency a large backlog adds to each."""

_Call = tuple[AsyncScript | None, Sequence[Any], "asyncio.Future[Any]"]
"""A script and its ARGV, or ``None`` and the arguments of a `hot` operation."""

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class AutoPipeline:
    """Sends the script calls made together (one loop turn, or one round trip) as one pipeline."""

    def __init__(
        self,
        client: aioredis.Redis,
        translate: Callable[[RedisError], BaseException],
        *,
        hot: AsyncScript,
        prefix: str,
    ) -> None:
        self._client = client
        self._translate = translate
        self._hot = hot
        self._prefix = prefix
        self._queue: deque[_Call] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.pipelines = 0
        """Pipelines sent so far (for measurement and tests)."""

    async def call(self, script: AsyncScript, args: Sequence[Any]) -> Any:
        """Run `script` with `args` (ARGV; no KEYS); return its reply."""
        return await self._queued(script, args)

    async def hot(self, args: Sequence[Any]) -> Any:
        """Run one operation of ``HOT_BATCH`` (kind, then its script's ARGV after the prefix).

        Returns that script's reply; a script error is this caller's alone.
        """
        return await self._queued(None, args)

    async def _queued(self, script: AsyncScript | None, args: Sequence[Any]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, args, future))
        if not self._busy:
            # Even a lone call goes through the queue: what other tasks call in the same
            # loop turn joins it, so a wave of calls leaves as one pipeline, not one call
            # and then the rest (measured: the bus workers' checks and commits at 2 and 4
            # workers each took two round trips instead of one).
            self._busy = True
            self._task = asyncio.create_task(self._drain(), name="firebreak-redis-pipeline")
        return await future

    def _unwrap(self, reply: Any) -> Any:
        if isinstance(reply, list) and len(reply) == 2 and reply[0] == "err":
            raise self._translate(ResponseError(str(reply[1])))
        return reply

    async def close(self) -> None:
        """Wait for the calls already queued."""
        task = self._task
        if task is not None and not task.done():
            await task

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch = [self._queue.popleft() for _ in range(min(MAX_BATCH, len(self._queue)))]
                await self._send(batch)
        finally:
            self._busy = False
            while self._queue:  # only if cancelled: nobody would ever answer these
                _, _, future = self._queue.popleft()
                if not future.done():
                    future.set_exception(self._translate(RedisError("pipeline cancelled")))

    async def _send(self, batch: list[_Call], *, reload: bool = True) -> None:
        hot = [call for call in batch if call[0] is None]
        rest = [call for call in batch if call[0] is not None]
        pipe = self._client.pipeline(transaction=False)
        if hot:
            payload = _ENCODE([call[1] for call in hot])
            pipe.evalsha(self._hot.sha, 0, self._prefix, payload)
        for script, args, _ in rest:
            assert script is not None  # noqa: S101  -- sorted above
            pipe.evalsha(script.sha, 0, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            fail(batch, self._translate(exc))
            return
        except BaseException as exc:
            fail(batch, exc)
            raise
        self.pipelines += 1
        missing: list[_Call] = []
        if hot:
            reply, replies = replies[0], replies[1:]
            if isinstance(reply, NoScriptError) and reload:
                missing.extend(hot)
            else:
                self._settle_batch(hot, reply)
        for call, reply in zip(rest, replies, strict=True):
            if isinstance(reply, NoScriptError) and reload:
                missing.append(call)  # the server lost its scripts (a restart): load, resend
            else:
                self._settle(call[2], reply)
        if missing:
            await self._resend(missing)

    async def _resend(self, missing: list[_Call]) -> None:
        """Load the scripts the server lost (a restart, a flush) and send their calls again."""
        try:
            for source in {(call[0] or self._hot).script for call in missing}:
                await self._client.script_load(source)
        except RedisError as exc:
            fail(missing, self._translate(exc))
            return
        await self._send(missing, reload=False)

    def _settle_batch(self, hot: list[_Call], reply: Any) -> None:
        """Settle the `hot` calls from the reply of their ``HOT_BATCH`` call."""
        if isinstance(reply, BaseException):
            for call in hot:
                self._settle(call[2], reply)
            return
        for call, one in zip(hot, reply, strict=True):
            self._settle_hot(call[2], one)

    def _settle_hot(self, future: asyncio.Future[Any], reply: Any) -> None:
        if future.done():  # the caller was cancelled
            return
        try:
            future.set_result(self._unwrap(reply))
        except BaseException as exc:  # noqa: BLE001  -- the caller's own script error
            future.set_exception(exc)

    def _settle(self, future: asyncio.Future[Any], reply: Any) -> None:
        answer(future, self._translate(reply) if isinstance(reply, RedisError) else reply)
