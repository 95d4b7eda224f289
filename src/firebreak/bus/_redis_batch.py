"""`Batcher`: how a `RedisBus` sends its short commands, a batch at a time.

Why publishes, acks and replies leave in batches, and why a batch's publishes are one
script call, is told in the module docstring of `firebreak.bus.redis`.
"""

from __future__ import annotations

import asyncio
import json
from collections import deque
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, ResponseError

from firebreak._futures import answer, fail

__all__ = ["Batcher"]

_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

_MAX_BATCH = 512
"""Most commands in one pipeline: bounds what a backlog adds to each one's wait."""

_Command = tuple[tuple[Any, ...], str | None, "asyncio.Future[Any]"]


class Batcher:
    """Commands of one turn of the loop, or queued while a batch is in flight, sent together.

    A batch of several commands is a ``MULTI``/``EXEC`` pipeline, so the server applies it
    before serving blocked readers (see `firebreak.bus.redis`); each command still keeps
    its own reply or error (a script's error is its caller's alone); a
    connection error reaches every caller of the batch. A caller cancelled while queued
    does not unsend its command: a publish may still happen, an ack may still land, both
    of which at-least-once delivery allows.

    Args:
        client: the bus's connection pool.
        publish: the source of the script that adds a batch's publishes (``ARGV[1]`` a
            JSON array of ``[stream, body, key]``; it answers each id or error).
    """

    def __init__(self, client: aioredis.Redis, *, publish: str) -> None:
        self._client: Any = client  # redis-py's execute_command is untyped
        self._publish = (publish, client.register_script(publish).sha)
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
                fail(self._queue, ConnectionError("redis bus batch cancelled"))
                self._queue.clear()

    def _merge(self, batch: list[_Command]) -> list[_Command]:
        """The batch with its publishes (two or more) as one call of the publishing script, first.

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
            fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self.pipelines += 1
        missing: list[_Command] = []
        for command, reply in zip(batch, replies, strict=True):
            future = command[2]
            if isinstance(reply, NoScriptError) and reload and command[1] is not None:
                missing.append(command)  # the server lost its scripts (a restart)
            else:
                answer(future, reply)
        if missing:
            try:
                for source in {command[1] for command in missing if command[1] is not None}:
                    await self._client.script_load(source)
            except Exception as exc:  # noqa: BLE001 - each caller gets the error
                fail(missing, exc)
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
    """Answer each publish of a publishing script call from that call's outcome."""
    if merged.cancelled():
        replies: list[Any] = [ConnectionError("redis bus batch cancelled")] * len(futures)
    elif (error := merged.exception()) is not None:
        replies = [error] * len(futures)
    else:
        replies = list(merged.result())
    for future, reply in zip(futures, replies, strict=True):
        answer(future, reply)
