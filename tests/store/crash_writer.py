"""Run by the crash test: commit steps forever and print each acknowledged commit.

Usage: python crash_writer.py DB_PATH RUNS. Each of RUNS concurrent runs commits agents
0, 1, 2, ... under its lease; after every acknowledged commit a line "run agent" is printed
and flushed. The parent kills this process with SIGKILL at a random moment.
"""

from __future__ import annotations

import asyncio
import sys

from firebreak.store import SQLiteStore, StepRecord


async def main(path: str, runs: int) -> None:
    async with SQLiteStore(path) as store:
        sys.stdout.write("ready\n")
        sys.stdout.flush()

        async def drive(run_id: str) -> None:
            await store.create_run(run_id, "crash", {"run": run_id})
            lease = await store.acquire_lease(run_id, "crasher", ttl=600)
            agent = 0
            while True:
                record = StepRecord(
                    run_id=run_id, agent=f"a{agent}", status="succeeded", output=[agent] * 20
                )
                assert await store.commit_step(lease, record)
                sys.stdout.write(f"{run_id} a{agent}\n")
                sys.stdout.flush()
                agent += 1

        await asyncio.gather(*(drive(f"run-{i}") for i in range(runs)))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
