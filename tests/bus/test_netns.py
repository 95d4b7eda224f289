"""Multi-host shape: broker, orchestrator and workers in separate network namespaces.

Three namespaces (`netns_topology`) stand in for three hosts: a throwaway ``redis-server``
(store and Redis Streams bus) bound to the broker's address only, two ``firebreak worker``
processes in the worker namespace, and an orchestrator (``Engine(store, bus=URL)``) in
its own. They meet only over veths and a bridge, on loopback-range addresses
(127.77.0.0/24, so nothing is routable off the machine; each namespace sets
``route_localnet=1`` for that), and each "host" has its own hostname. Nothing listens
on the broker's address in the test's own namespace, so a run can only complete if every
hop really crosses the wire: the test shows no part assumes one host.

Needs root and iproute2: if the namespaces cannot be created the test skips, or fails
under ``CI=true``. Every process is killed by its PID and every namespace (with its veths
and bridge) deleted, on failure too.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from netns_topology import NetnsUnavailable, Topology

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from servers import in_ci

HERE = Path(__file__).resolve().parent
pytestmark = pytest.mark.slow

RUNS = [f"r{i}" for i in range(16)]
WORKERS = 2


def _unavailable(reason: str) -> None:
    if in_ci():
        pytest.fail(f"netns: {reason} (CI=true: the multi-host test must run)", pytrace=False)
    pytest.skip(f"netns: {reason}")


@pytest.fixture
def topology() -> Iterator[Topology]:
    """Broker, orchestrator and worker namespaces (made by `_create` in the test, so a
    refusal fails the test itself under CI); all torn down afterwards."""
    net = Topology()
    try:
        yield net
    finally:
        net.close()
        assert net.leftovers() == [], "namespaces or links left behind"


def _create(net: Topology) -> None:
    if shutil.which("redis-server") is None:
        _unavailable("redis-server is not installed")
    try:
        net.create()
    except NetnsUnavailable as exc:
        _unavailable(str(exc))


def _wait_for(log: Path, text: str, proc: object, timeout: float, count: int = 1) -> str:
    end = time.monotonic() + timeout
    while True:
        out = log.read_text(errors="replace") if log.exists() else ""
        if out.count(text) >= count:
            return out
        if proc.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError(f"{log.stem} exited {proc.returncode}:\n{out}")  # type: ignore[attr-defined]
        if time.monotonic() > end:
            raise AssertionError(f"{log.stem}: no {text!r} after {timeout}s:\n{out}")
        time.sleep(0.02)


def _reachable_here(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def test_orchestrator_and_workers_on_separate_hosts(topology: Topology, tmp_path: Path) -> None:
    """Every run completes over the veths; each step is committed once, by a worker."""
    _create(topology)
    broker = topology.address("broker")
    port = random.randint(20000, 29999)  # a free port in the broker's own namespace
    url = f"redis://{broker}:{port}/0"
    prefix = "fbnet"
    env = dict(os.environ, PYTHONUNBUFFERED="1", FBTEST_SINK=f"{url}|{prefix}-sink")
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    env.pop("FIREBREAK_BUS", None)
    env.pop("FIREBREAK_STORE", None)

    server_log = tmp_path / "redis.log"
    server = topology.run(
        "broker",
        ["redis-server", "--bind", broker, "--port", str(port), "--save", "",
         "--appendonly", "no", "--protected-mode", "no", "--dir", str(tmp_path)],
        log=server_log, cwd=tmp_path, env=env,
    )  # fmt: skip
    _wait_for(server_log, "Ready to accept connections", server, timeout=10)
    assert not _reachable_here(broker, port), "the broker is reachable outside its namespace"

    workers = []
    for i in range(WORKERS):
        argv = [
            sys.executable, "-m", "firebreak", "worker", "flows:batch",
            "--bus", f"{url}?prefix={prefix}-bus", "--store", f"{url}?prefix={prefix}-store",
            "--concurrency", "8", "--drain", "5",
        ]  # fmt: skip
        log = tmp_path / f"worker{i}.log"
        workers.append((topology.run("work", argv, log=log, cwd=HERE, env=env), log))
    for proc, log in workers:
        _wait_for(log, "ready", proc, timeout=15)

    orch_log = tmp_path / "orch.log"
    orch = topology.run(
        "orch",
        [sys.executable, "netns_orchestrator.py", url, prefix, *RUNS],
        log=orch_log, cwd=HERE, env=env,
    )  # fmt: skip
    out = _wait_for(orch_log, "report ", orch, timeout=20)
    assert orch.wait(10) == 0, out
    report = json.loads(out.split("report ", 1)[1].splitlines()[0])

    # The orchestrator reached the broker from its own address; the workers from theirs.
    assert report["hostname"] == f"fb-{topology.tag}-orch"
    assert report["me"] == topology.address("orch")
    assert topology.address("work") in report["peers"], report["peers"]
    for i, run_id in enumerate(RUNS):
        run = report["runs"][run_id]
        assert run["status"] == "succeeded", (run_id, run)
        steps = run["steps"]
        assert sorted(steps) == ["a", "b", "c", "d"], run_id
        assert all(s["status"] == "succeeded" for s in steps.values()), run_id
        assert len({s["seq"] for s in steps.values()}) == 4, run_id
        for agent, step in steps.items():
            assert step["output"]["token"] == report["effects"][f"{run_id}/{agent}"]
        assert steps["d"]["output"]["v"] == i * 2 + i + 1, run_id
    assert len(report["effects"]) == len(RUNS) * 4
    assert all(int(n) == 1 for n in report["calls"].values()), report["calls"]
    assert all(counts == [0, 0] for counts in report["streams"].values()), report["streams"]

    # Workers stop gracefully; between them they committed every step exactly once.
    committed = duplicates = 0
    for proc, _ in workers:
        proc.send_signal(signal.SIGTERM)
    for proc, log in workers:
        assert proc.wait(10) == 0, log.read_text(errors="replace")
        text = log.read_text(errors="replace")
        assert re.search(rf"worker fb-{topology.tag}-work:\d+:\w+ ready", text), text
        stats = re.search(r"worker stopped: (\d+) executed, (\d+) committed, (\d+) dup", text)
        assert stats is not None, text
        committed += int(stats[2])
        duplicates += int(stats[3])
    assert committed == len(RUNS) * 4
    assert duplicates == 0
