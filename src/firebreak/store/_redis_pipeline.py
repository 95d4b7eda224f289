"""Automatic pipelining of `RedisStore` scripts: many concurrent callers, one round trip.

With nothing in flight a script call goes straight out (no extra task, no added latency);
calls made while one is in flight queue up and leave together, as one non-transactional
pipeline of ``EVALSHA`` commands, as soon as the call in flight returns. Each script is
still atomic on the server and judged on its own: one caller's error (a script error) is
that caller's alone; a connection error reaches every caller of the batch.

Under 50 concurrent workflows this turns ~50 separate request/response exchanges, each
with its own pool checkout, socket write and wake-up, into one, which is most of the
client-side cost of a small script call in redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError, RedisError

__all__ = ["MAX_BATCH", "AutoPipeline"]

MAX_BATCH = 512
"""Most commands in one pipeline: bounds the latency a large backlog adds to each."""

_Call = tuple[AsyncScript, Sequence[Any], "asyncio.Future[Any]"]


class AutoPipeline:
    """Sends script calls directly when idle, in pipelines when calls overlap."""

    def __init__(
        self, client: aioredis.Redis, translate: Callable[[RedisError], BaseException]
    ) -> None:
        self._client = client
        self._translate = translate
        self._queue: deque[_Call] = deque()
        self._busy = False
        self._task: asyncio.Task[None] | None = None
        self.pipelines = 0
        """Pipelines sent so far (for measurement and tests)."""

    async def call(self, script: AsyncScript, args: Sequence[Any]) -> Any:
        """Run `script` with `args` (ARGV; no KEYS); return its reply."""
        if not self._busy:
            self._busy = True
            try:
                try:
                    return await script(args=args)
                except RedisError as exc:
                    raise self._translate(exc) from None
            finally:
                self._next()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.append((script, args, future))
        return await future

    async def close(self) -> None:
        """Wait for the calls already queued."""
        task = self._task
        if task is not None and not task.done():
            await task

    def _next(self) -> None:
        if self._queue:
            self._task = asyncio.create_task(self._drain(), name="firebreak-redis-pipeline")
        else:
            self._busy = False

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
        pipe = self._client.pipeline(transaction=False)
        for script, args, _ in batch:
            pipe.evalsha(script.sha, 0, *args)
        try:
            replies = await pipe.execute(raise_on_error=False)
        except RedisError as exc:
            _fail(batch, self._translate(exc))
            return
        except BaseException as exc:
            _fail(batch, exc)
            raise
        self.pipelines += 1
        missing: list[_Call] = []
        for call, reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError) and reload:
                missing.append(call)  # the server lost its scripts (a restart): load, resend
            else:
                self._settle(call[2], reply)
        if missing:
            try:
                for source in {call[0].script for call in missing}:
                    await self._client.script_load(source)
            except RedisError as exc:
                _fail(missing, self._translate(exc))
                return
            await self._send(missing, reload=False)

    def _settle(self, future: asyncio.Future[Any], reply: Any) -> None:
        if future.done():  # the caller was cancelled
            return
        if isinstance(reply, RedisError):
            future.set_exception(self._translate(reply))
        elif isinstance(reply, BaseException):
            future.set_exception(reply)
        else:
            future.set_result(reply)


def _fail(batch: Sequence[_Call], error: BaseException) -> None:
    for _, _, future in batch:
        if not future.done():
            future.set_exception(error)
