"""Child processes of the bus tests: workers and orchestrators, killed at will."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis
from firebreak.store import RunStatus, StepStatus

HERE = Path(__file__).resolve().parent


class Procs:
    """Child processes of one test, each with its output in a file; all killed at the end."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        out = (self.tmp / f"{name}.log").open("wb")
        proc = subprocess.Popen(  # noqa: S603 - our own scripts
            [sys.executable, *args], cwd=HERE, env=self.env, stdout=out, stderr=subprocess.STDOUT
        )
        out.close()
        self.procs[name] = proc
        return proc

    def start_workers(self, count: int, bus: str, store: str) -> None:
        """Start `count` `firebreak worker` processes on flows:batch; wait until each is ready."""
        for i in range(count):
            self.start(
                f"w{i}", "worker_main.py", "worker", "flows:batch", "--bus", bus,
                "--store", store, "--concurrency", "4", "--name", f"w{i}", "--drain", "5",
            )  # fmt: skip
        for i in range(count):
            self.wait_for(f"w{i}", "ready")

    def log(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def wait_for(self, name: str, text: str, timeout: float = 15.0, count: int = 1) -> None:
        end = time.monotonic() + timeout
        while self.log(name).count(text) < count:
            proc = self.procs[name]
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited {proc.returncode}:\n{self.log(name)}")
            if time.monotonic() > end:
                raise AssertionError(f"{name}: no {text!r} after {timeout}s:\n{self.log(name)}")
            time.sleep(0.02)

    def kill_worker_and_orchestrator(
        self, store: str, bus: str, runs: list[str], *, timeout: float = 15.0
    ) -> int:
        """Drive `runs` with orchestrator o1 over the started workers; SIGKILL worker w0
        after 3 runs finished and o1 after 8; orchestrator o2 finishes the batch. Returns
        how many runs o1 finished (`timeout`: for each of o1's first waits)."""
        self.start("o1", "orchestrator_main.py", store, bus, "1.5", *runs)
        self.wait_for("o1", "done", count=3, timeout=timeout)
        self.procs["w0"].send_signal(signal.SIGKILL)  # dies holding tasks
        self.wait_for("o1", "done", count=8, timeout=timeout)
        self.procs["o1"].send_signal(signal.SIGKILL)  # dies mid-batch, leases held
        finished_first = self.log("o1").count("done ")
        self.start("o2", "orchestrator_main.py", store, bus, "1.5", *runs)
        self.wait_for("o2", "done", count=len(runs), timeout=max(40, timeout))
        return finished_first

    def stop_workers(self, names: list[str], timeout: float = 15.0) -> None:
        """SIGTERM (a graceful stop) and check each stopped cleanly within `timeout`."""
        for name in names:
            self.procs[name].send_signal(signal.SIGTERM)
        for name in names:
            assert self.procs[name].wait(timeout) == 0, self.log(name)
            assert "worker stopped:" in self.log(name)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
            proc.wait()


def check_runs(redis_url: str, prefix: str, sink: redis.Redis, runs: list[str]) -> None:
    """The batch of flows:batch runs is done right, whatever was killed along the way.

    Every run succeeded with its 4 steps, each committed once (distinct commit order);
    each step's output carries the token of the one side effect its idempotency key
    applied; every effect was applied once. The store is a `RedisStore` under
    ``<prefix>-store``, the sink ``<prefix>-sink`` on the same Redis.
    """
    from firebreak.store.redis import RedisStore  # noqa: PLC0415 - only these tests need it

    async def read() -> dict[str, tuple[Any, dict[str, Any]]]:
        async with RedisStore(redis_url, prefix=f"{prefix}-store") as opened:
            return {run: (await opened.get_run(run), await opened.get_steps(run)) for run in runs}

    stored = asyncio.run(read())
    effects = sink.hgetall(f"{prefix}-sink:effects")
    calls = {k: int(v) for k, v in sink.hgetall(f"{prefix}-sink:calls").items()}
    for i, run_id in enumerate(runs):
        record, steps = stored[run_id]
        assert record is not None, run_id
        assert record.status == RunStatus.SUCCEEDED, run_id
        assert sorted(steps) == ["a", "b", "c", "d"], run_id
        assert all(s.status == StepStatus.SUCCEEDED for s in steps.values())
        assert len({s.seq for s in steps.values()}) == 4  # each step committed once
        for agent, step in steps.items():
            assert step.output["token"] == effects[f"{run_id}/{agent}"]
        assert steps["d"].output["v"] == i * 2 + i + 1
    assert len(effects) == len(runs) * 4  # each effect applied once, by its idempotency key
    assert sum(calls.values()) >= len(runs) * 4
