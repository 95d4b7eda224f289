"""Measure PostgresStore commit_step: sequential latency, and 50 concurrent runs with and
without group commit. Not a test (pytest does not collect it); run it by hand::

    .venv/bin/python tests/postgres/bench_group_commit.py [URL]

Each configuration gets a fresh schema, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
import uuid

from firebreak.store import StepRecord, StepStatus
from firebreak.store.postgres import PostgresStore

URL = os.environ.get("FIREBREAK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
RUNS, STEPS, SEQUENTIAL = 50, 20, 300


def _step(run_id: str, agent: str) -> StepRecord:
    return StepRecord(run_id=run_id, agent=agent, status=StepStatus.SUCCEEDED, output={"v": agent})


async def sequential(url: str) -> list[float]:
    store = PostgresStore(url, schema=f"fbbench_{uuid.uuid4().hex[:12]}")
    try:
        async with store:
            await store.create_run("r", "wf", 0)
            lease = await store.acquire_lease("r", "o", ttl=600)
            times = []
            for i in range(SEQUENTIAL):
                started = time.perf_counter()
                await store.commit_step(lease, _step("r", f"a{i}"))
                times.append(time.perf_counter() - started)
            return times
    finally:
        await store.destroy()


async def concurrent(url: str, *, group_commit: bool) -> tuple[float, int]:
    store = PostgresStore(url, schema=f"fbbench_{uuid.uuid4().hex[:12]}", group_commit=group_commit)
    try:
        async with store:
            leases = []
            for i in range(RUNS):
                await store.create_run(f"r{i}", "wf", i)
                leases.append(await store.acquire_lease(f"r{i}", "o", ttl=600))

            async def run(i: int) -> None:
                for j in range(STEPS):
                    assert await store.commit_step(leases[i], _step(f"r{i}", f"a{j}"))

            started = time.perf_counter()
            await asyncio.gather(*(run(i) for i in range(RUNS)))
            elapsed = time.perf_counter() - started
            batches = store._committer.batches if store._committer else 0
            return RUNS * STEPS / elapsed, batches
    finally:
        await store.destroy()


async def main(url: str) -> None:
    times = await sequential(url)
    times.sort()
    out = sys.stdout
    out.write(
        f"sequential commit_step ({SEQUENTIAL}): median {statistics.median(times) * 1e3:.2f} ms,"
        f" p95 {times[int(len(times) * 0.95)] * 1e3:.2f} ms\n"
    )
    for group in (True, False):
        rate, batches = await concurrent(url, group_commit=group)
        label = "group commit" if group else "one transaction per commit"
        extra = f", {batches} transactions for {RUNS * STEPS} commits" if group else ""
        out.write(
            f"{RUNS} concurrent runs x {STEPS} steps, {label}: {rate:,.0f} commits/s{extra}\n"
        )


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else URL))
