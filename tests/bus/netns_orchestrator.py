# ruff: noqa: T201 -- stdout is the protocol with the test
"""The orchestrator "host" of the multi-host test: drive runs of ``flows.batch``, then report.

Usage: ``python netns_orchestrator.py REDIS_URL PREFIX RUN_ID...`` (run it in the
directory holding ``flows.py``). The store is ``REDIS_URL?prefix=PREFIX-store``, the bus
``REDIS_URL?prefix=PREFIX-bus``, the side-effect sink ``PREFIX-sink``; run ``rN`` gets
``{"n": N}``. Prints ``done RUN_ID STATUS`` per run, then one ``report {json}`` line read
back from the broker: each run's status and steps, the sink's counts, the task and dead
stream lengths, and the peer addresses the broker sees (its clients, by IP).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any

import flows
import redis.asyncio as aioredis

from firebreak import Engine
from firebreak.store.redis import RedisStore


async def main(url: str, prefix: str, run_ids: list[str]) -> None:
    store = RedisStore(url, prefix=f"{prefix}-store")
    async with store, Engine(store, bus=f"{url}?prefix={prefix}-bus") as engine:
        print("ready", flush=True)

        async def drive(run_id: str) -> None:
            result = await engine.run(flows.batch, {"n": int(run_id[1:])}, run_id=run_id)
            print(f"done {run_id} {result.status.value}", flush=True)

        await asyncio.gather(*(drive(run_id) for run_id in run_ids))
        runs: dict[str, Any] = {}
        for run_id in run_ids:
            record = await store.get_run(run_id)
            steps = await store.get_steps(run_id)
            runs[run_id] = {
                "status": None if record is None else record.status.value,
                "steps": {
                    agent: {"status": s.status.value, "seq": s.seq, "output": s.output}
                    for agent, s in steps.items()
                },
            }
    client = aioredis.Redis.from_url(url, decode_responses=True)
    try:
        me = await client.client_info()
        peers = sorted({c["addr"].rpartition(":")[0] for c in await client.client_list()})
        streams = {}
        for agent in "abcd":
            streams[agent] = [
                await client.xlen(f"{prefix}-bus:q:busbatch.{agent}"),
                await client.xlen(f"{prefix}-bus:dead:busbatch.{agent}"),
            ]
        report = {
            "hostname": socket.gethostname(),
            "me": str(me["addr"]).rpartition(":")[0],
            "peers": peers,
            "runs": runs,
            "effects": await client.hgetall(f"{prefix}-sink:effects"),
            "calls": await client.hgetall(f"{prefix}-sink:calls"),
            "streams": streams,
        }
    finally:
        await client.aclose()
    print("report " + json.dumps(report), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3:]))
