"""Instructions per in-memory run, counted by callgrind: repeatable on a busy machine.

Wall-clock figures of `workflow.py` move with whatever else the machine runs; the number
of instructions does not. This runs `Engine.run` of the 10-step no-op chain of
`workflow.py` on a `MemoryStore` N times under ``valgrind --tool=callgrind``, for two
values of N, and prints the difference per run (start-up and imports cancel out).

Run: ``python bench/instructions.py [--steps 10] [--runs 50 550] [--store sqlite]`` (needs
valgrind). ``--store sqlite``: on a `SQLiteStore` with ``synchronous=NORMAL`` in a scratch
directory instead, so the count is the CPU work of a durable run without its fsyncs (an
fsync costs time in the kernel and the disk, which callgrind does not see).
Measured 2026-11-25: 1,902K instructions per 10-step run before that day's changes to
the engine and the memory store, 1,194K after the afternoon's (21.8 -> 12.6 µs a step on a
quiet machine), 912K after the evening's (7.5-8.0 µs a step). 2026-12-07, eighth
session: 878K -> 733K (the objects of every step built positionally); on SQLite 1,634K ->
1,459K. Ninth session (``--runs 20 70``, ``PYTHONHASHSEED=0``: the hash seed moved the
count by about 1 % from one process to the next; the script now fixes it): 733K -> 650K
(frozen records built as their twin class, the timeout inside the attempt, `Context`
reading its `StepCall`); on SQLite 1,425K -> 1,354K.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
WARM_UP = 20


async def child(steps: int, runs: int, store_kind: str) -> None:
    sys.path.insert(0, str(HERE))
    from firebreak.engine import Engine  # noqa: PLC0415
    from firebreak.store import CheckpointStore, MemoryStore, SQLiteStore  # noqa: PLC0415
    from workflow import chain_workflow  # noqa: PLC0415 - the bench's own workflow

    with tempfile.TemporaryDirectory() as scratch:
        store: CheckpointStore = (
            MemoryStore()
            if store_kind == "memory"
            else SQLiteStore(Path(scratch) / "fb.db", synchronous="NORMAL")
        )
        async with store:
            engine = Engine(store)
            wf = chain_workflow("bench", steps)
            for i in range(WARM_UP + runs):
                result = await engine.run(wf, i, run_id=f"r{i}")
                assert result.status == "succeeded", result


def count(steps: int, runs: int, store_kind: str) -> int:
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise SystemExit("valgrind is not installed (Debian: apt install valgrind)")
    with tempfile.TemporaryDirectory() as scratch:
        command = [valgrind, "--tool=callgrind", f"--callgrind-out-file={scratch}/cg.out"]
        command += [sys.executable, __file__, "--child", str(steps), str(runs), store_kind]
        # One hash seed for every count: string hashes place dict entries, which moves the
        # count by about 1 % from one process to the next.
        env = {**os.environ, "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", "0")}
        out = subprocess.run(command, capture_output=True, text=True, check=True, env=env)  # noqa: S603
    found = re.search(r"Collected : (\d+)", out.stderr)
    if found is None:
        raise RuntimeError(f"callgrind printed no total:\n{out.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--runs", type=int, nargs=2, default=(50, 550), metavar=("FEW", "MANY"))
    parser.add_argument("--store", choices=("memory", "sqlite"), default="memory")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        asyncio.run(child(int(args.child[0]), int(args.child[1]), args.child[2]))
        return
    few, many = args.runs
    kind = args.store
    per_run = (count(args.steps, many, kind) - count(args.steps, few, kind)) / (many - few)
    where = "in memory" if kind == "memory" else "on SQLite (NORMAL)"
    print(
        f"{per_run / 1000:,.0f}K instructions per {args.steps}-step run {where} "
        f"({per_run / args.steps / 1000:,.1f}K per step; {many} - {few} runs, callgrind)"
    )


if __name__ == "__main__":
    main()
