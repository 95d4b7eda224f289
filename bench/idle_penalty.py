"""What CPU work costs right after the CPU was idle: why durable steps cost more than their fsync.

A durable step waits for its fsync, and while it waits the CPU idles. On some machines
(virtual machines especially) the code that runs next finds its caches cold and costs
several times what it costs back to back. This measures it without a disk: the same
work, back to back, after a short sleep (the CPU idles, as in an fsync) and after a short
busy wait (the CPU stays busy), in user time of the measuring thread. Two kinds of work:
a step of firebreak's 10-step no-op chain in memory, and one raw SQLite INSERT+COMMIT
with ``synchronous=NORMAL`` (no fsync).

Run: ``python bench/idle_penalty.py [--pause-us 150] [--rounds 4]``. ``workflow.py``
compares a durable firebreak step with a raw fsynced commit; the ratio it can reach
depends on how much CPU work each does between fsyncs and on this penalty.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from firebreak.engine import Engine
from firebreak.store import MemoryStore
from workflow import chain_workflow

STEPS = 10


def _user() -> float:
    return resource.getrusage(resource.RUSAGE_THREAD).ru_utime


def _pauses(seconds: float) -> dict[str, Callable[[], None]]:
    def spin() -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass

    return {
        "back to back": lambda: None,
        "after a sleep": lambda: time.sleep(seconds),
        "after a busy wait": spin,
    }


async def engine_step(pause: Callable[[], None], n: int, tag: str) -> float:
    """User µs per step of the chain in memory, `pause` before each step's agent."""
    async with MemoryStore() as store:
        engine = Engine(store)
        wf = chain_workflow(f"idle-{tag}", STEPS, on_start=lambda _agent: pause())
        for i in range(20):
            await engine.run(wf, i, run_id=f"warm{i}")
        before = _user()
        for i in range(n):
            await engine.run(wf, i, run_id=f"r{i}")
        return (_user() - before) / (n * STEPS) * 1e6


def raw_commit(pause: Callable[[], None], n: int, scratch: Path) -> float:
    """User µs per raw INSERT+COMMIT (WAL, synchronous=NORMAL), `pause` before each."""
    conn = sqlite3.connect(scratch / "raw.db", isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("CREATE TABLE IF NOT EXISTS t (k INTEGER PRIMARY KEY, v TEXT)")
        first = conn.execute("SELECT COALESCE(MAX(k), 0) + 1 FROM t").fetchone()[0]
        before = _user()  # over the whole loop: the clock ticks too coarsely for one commit
        for k in range(first, first + n):
            pause()
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, ?)", (k, "x" * 40))
            conn.execute("COMMIT")
        return (_user() - before) / n * 1e6
    finally:
        conn.close()


def _work(pause_s: float, user_us: float, mode: str) -> float:
    # A busy wait is user time itself: take it out, leaving the work's.
    return user_us - pause_s * 1e6 if mode == "after a busy wait" else user_us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pause-us", type=float, default=150.0)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    pause_s = args.pause_us / 1e6
    pauses = _pauses(pause_s)
    engine: dict[str, list[float]] = {mode: [] for mode in pauses}
    raw: dict[str, list[float]] = {mode: [] for mode in pauses}
    with tempfile.TemporaryDirectory() as scratch:
        for r in range(args.rounds):
            for mode, pause in pauses.items():
                spent = asyncio.run(engine_step(pause, 200, f"{r}"))
                engine[mode].append(_work(pause_s, spent, mode))
                raw[mode].append(_work(pause_s, raw_commit(pause, 2000, Path(scratch)), mode))
    print(
        f"user µs of CPU work, median of {args.rounds} rounds; pause {args.pause_us:.0f} µs"
        " (the busy wait's own time taken out)"
    )
    print(f"{'':20} {'firebreak step':>15} {'raw commit':>11}")
    for mode in pauses:
        e, c = statistics.median(engine[mode]), statistics.median(raw[mode])
        print(f"{mode:20} {e:15.1f} {c:11.1f}")
    base_e = statistics.median(engine["back to back"])
    base_c = statistics.median(raw["back to back"])
    slept_e = statistics.median(engine["after a sleep"])
    slept_c = statistics.median(raw["after a sleep"])
    print(
        f"after a sleep: firebreak step x{slept_e / base_e:.1f},"
        f" raw commit x{slept_c / base_c:.1f};"
        f" extra µs a step from idling: {slept_e - base_e:.0f} (firebreak),"
        f" {slept_c - base_c:.0f} (raw)"
    )


if __name__ == "__main__":
    main()
