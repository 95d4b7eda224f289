# ruff: noqa: T201 -- stdout is the protocol with the test
"""An orchestrator process for the bus tests: drive runs of ``flows.batch`` through a bus.

Usage: ``python orchestrator_main.py STORE_URL BUS_URL LEASE_TTL RUN_ID...``; run ``N`` of
``r<N>`` gets the input ``{"n": N}``. A run another orchestrator holds is retried until
its lease expires. A run whose drive fails ends the process with the error, unless
``$ORCHESTRATOR_RESUMES`` (default 0) allows resuming it that many times, as a long-lived
orchestrator would (each failure printed). Prints ``ready`` once connected and ``done
RUN_ID STATUS`` per run.
"""

from __future__ import annotations

import asyncio
import os
import sys

import flows

from firebreak import Engine
from firebreak.bus import open_bus
from firebreak.engine.bus_executor import BusExecutor
from firebreak.errors import LeaseHeld
from firebreak.store import open_store

RESUMES = int(os.environ.get("ORCHESTRATOR_RESUMES", "0"))
"""Failed drives of one run resumed before the process gives up (and exits with the error)."""


async def drive(engine: Engine, run_id: str) -> None:
    n = int(run_id.lstrip("r"))
    failures = 0
    while True:
        try:
            result = await engine.run(flows.batch, {"n": n}, run_id=run_id)
        except LeaseHeld:
            await asyncio.sleep(0.2)
            continue
        except Exception as exc:
            failures += 1
            print(f"failed {run_id} ({failures}): {type(exc).__name__}: {exc}", flush=True)
            if failures > RESUMES:
                raise
            await asyncio.sleep(0.5)
            continue
        print(f"done {run_id} {result.status.value}", flush=True)
        return


async def main(store_url: str, bus_url: str, ttl: float, run_ids: list[str]) -> None:
    async with (
        open_store(store_url) as store,
        open_bus(bus_url) as bus,
        BusExecutor(bus, store, poll=1.0) as executor,
    ):
        engine = Engine(store, executor=executor, lease_ttl=ttl)
        print("ready", flush=True)
        await asyncio.gather(*(drive(engine, run_id) for run_id in run_ids))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4:]))
