"""The workflows the bus tests run, imported by the test process and by worker processes.

``batch``: ``a`` → (``b``, ``c``) → ``d``; every agent takes 20-80 ms (so a kill lands
mid-step), counts its calls and applies a side effect keyed by ``ctx.idempotency_key``
exactly once (``SET NX``-style): the token of the first application is the agent's output,
so a committed output always names the effect that stands. The sink is this module's dicts
in-process, or Redis when ``$FBTEST_SINK`` is ``REDIS_URL|PREFIX`` (worker processes).

``mixed``: an optional agent that fails (degrades), one that asks for a person, and one
that sees the degraded dependency, to check the orchestrator settles remote outcomes as
it settles local ones.
"""

from __future__ import annotations

import asyncio
import os
import random
import uuid
from typing import Any

import firebreak as fb

CALLS: dict[str, int] = {}
"""In-process sink: agent invocations per idempotency key."""
EFFECTS: dict[str, str] = {}
"""In-process sink: the effect token that stands, per idempotency key."""

_clients: dict[int, Any] = {}


def _redis_sink() -> tuple[Any, str] | None:
    spec = os.environ.get("FBTEST_SINK")
    if not spec:
        return None
    url, _, prefix = spec.partition("|")
    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None:
        import redis.asyncio as aioredis  # noqa: PLC0415 - only worker processes use it

        client = _clients[loop_id] = aioredis.Redis.from_url(url, decode_responses=True)
    return client, prefix


async def effect(ctx: fb.Context) -> str:
    """Apply this step's side effect once per idempotency key; the token that stands."""
    await asyncio.sleep(random.uniform(0.02, 0.08))
    key = ctx.idempotency_key
    token = uuid.uuid4().hex[:8]
    sink = _redis_sink()
    if sink is None:
        CALLS[key] = CALLS.get(key, 0) + 1
        return EFFECTS.setdefault(key, token)
    client, prefix = sink
    await client.hincrby(f"{prefix}:calls", key, 1)
    await client.hsetnx(f"{prefix}:effects", key, token)
    return str(await client.hget(f"{prefix}:effects", key))


batch = fb.Workflow("busbatch")


@batch.agent(timeout=5)
async def a(ctx: fb.Context, run: dict[str, Any]) -> dict[str, Any]:
    return {"n": run["n"], "token": await effect(ctx)}


@batch.agent(after=[a], timeout=5)
async def b(ctx: fb.Context, a: dict[str, Any]) -> dict[str, Any]:
    return {"v": a["n"] * 2, "token": await effect(ctx)}


@batch.agent(after=[a], timeout=5)
async def c(ctx: fb.Context, a: dict[str, Any]) -> dict[str, Any]:
    return {"v": a["n"] + 1, "token": await effect(ctx)}


@batch.agent(after=[b, c], timeout=5)
async def d(ctx: fb.Context, b: dict[str, Any], c: dict[str, Any]) -> dict[str, Any]:
    return {"v": b["v"] + c["v"], "token": await effect(ctx)}


mixed = fb.Workflow("busmixed")


@mixed.agent(timeout=5)
async def start(ctx: fb.Context, run: dict[str, Any]) -> int:
    return int(run["n"])


@mixed.agent(after=[start], critical=False, default=-1, timeout=5)
async def flaky(ctx: fb.Context, start: int) -> int:
    raise ValueError(f"flaky broke on {start}")


@mixed.agent(after=[flaky], timeout=5)
async def uses(ctx: fb.Context, flaky: int) -> dict[str, Any]:
    return {"flaky": flaky, "degraded": sorted(ctx.degraded)}


ask = fb.Workflow("busask")


@ask.agent(timeout=5)
async def decide(ctx: fb.Context, run: dict[str, Any]) -> int:
    raise fb.NeedsHuman("is this right?", suggestions=[1, 2])


crash = fb.Workflow("buscrash")


@crash.agent(timeout=5)
async def boom(ctx: fb.Context, run: dict[str, Any]) -> int:
    raise RuntimeError("boom")
