"""``firebreak worker``: run the step tasks of a bus (see docs/distributed.md)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Annotated

import typer

from firebreak.bus import open_bus
from firebreak.bus.base import setup_bus
from firebreak.engine.worker import Worker, WorkerStats
from firebreak.resilience import BreakerRegistry, breakers
from firebreak.store import open_store
from firebreak.workflow import Workflow

from .common import Store, err_console
from .exits import CliError, cli_errors, run_async
from .loading import load_workflows

DEFAULT_CONCURRENCY = 8

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    """Add ``firebreak worker`` to `app`."""
    app.command("worker")(worker_command)


def worker_command(
    refs: Annotated[
        list[str],
        typer.Argument(
            metavar="MODULE:WORKFLOW...",
            help="The workflows whose tasks to run, e.g. flows:invoice.",
        ),
    ],
    *,
    bus: Annotated[
        str | None,
        typer.Option(
            "--bus",
            metavar="URL",
            help="Task bus URL (default: $FIREBREAK_BUS, else inproc://, which only a "
            "process's own engine can reach).",
            show_default=False,
        ),
    ] = None,
    store: Store = None,
    agents: Annotated[
        str | None,
        typer.Option("--agents", metavar="A,B", help="Only these agents' tasks (default: all)."),
    ] = None,
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency",
            "-c",
            min=1,
            help="Steps run at once (default: 8, or one per agent served if more).",
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", metavar="ID", help="Consumer name (default: host:pid:random)."),
    ] = None,
    breakers_url: Annotated[
        str | None,
        typer.Option(
            "--breakers",
            metavar="REDIS_URL",
            help="Share circuit breakers with other workers through this Redis "
            "(default: each worker has its own).",
        ),
    ] = None,
    drain: Annotated[
        float,
        typer.Option(
            "--drain", min=0.0, help="On SIGTERM, seconds held steps may finish before hand-back."
        ),
    ] = 30.0,
) -> None:
    """Run the tasks the orchestrators publish, until SIGTERM or Ctrl-C.

    Each step runs with its agent's full pipeline; its result is committed to the store
    (first commit wins, duplicates are dropped and counted), then the task is acked. On
    SIGTERM the worker takes no more work, lets held steps finish for up to --drain
    seconds and hands the rest back to the bus.
    """
    with cli_errors(err_console):
        workflows = load_workflows(refs)
        wanted = None if agents is None else [a.strip() for a in agents.split(",") if a.strip()]
        served = len(wanted) if wanted else sum(len(wf.agents) for wf in workflows.values())
        if concurrency is None:
            concurrency = max(DEFAULT_CONCURRENCY, served)
        elif concurrency < served:
            # Measured (bench/bus.py --agent-ms 10 --concurrency 4, 10 agents): +33 ms a
            # step on NATS, +15 ms on RabbitMQ, against +1 ms with a slot per agent.
            err_console.print(
                f"warning: --concurrency {concurrency} is below the {served} agents this "
                "worker serves: on NATS and RabbitMQ their queues take turns for the free "
                "slots, which adds tens of ms to a step at low load",
                highlight=False,
            )
        registry, shared = breakers, None
        if breakers_url is not None:
            from firebreak.resilience.redis_breaker import RedisBreakerStore  # noqa: PLC0415

            shared = RedisBreakerStore(breakers_url)
            registry = BreakerRegistry(store=shared)
        stats = run_async(
            _serve(
                list(workflows.values()),
                bus_url=bus,
                store_url=store,
                agents=wanted,
                concurrency=concurrency,
                name=name,
                drain=drain,
                registry=registry,
                closing=None if shared is None else shared.aclose,
            )
        )
        err_console.print(
            f"worker stopped: {stats.executed} executed, {stats.committed} committed, "
            f"{stats.duplicates} duplicates, {stats.stale} stale, {stats.dead} dead, "
            f"{stats.released} handed back",
            highlight=False,
        )


async def _serve(
    workflows: list[Workflow],
    *,
    bus_url: str | None,
    store_url: str | None,
    agents: list[str] | None,
    concurrency: int,
    name: str | None,
    drain: float,
    registry: BreakerRegistry,
    closing: Callable[[], Awaitable[None]] | None = None,
) -> WorkerStats:
    """Serve until stopped; then `closing` (the shared breakers: their last successes)."""
    try:
        opened_bus = open_bus(bus_url)
    except (ValueError, ImportError) as exc:
        raise CliError(str(exc)) from None
    try:
        await setup_bus(opened_bus)  # a bus out of reach: one line, not pages of traceback
        async with opened_bus as task_bus, open_store(store_url) as checkpoint_store:
            worker = Worker(
                workflows,
                bus=task_bus,
                store=checkpoint_store,
                agents=agents,
                concurrency=concurrency,
                name=name,
                drain=drain,
                registry=registry,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, worker.stop)
            err_console.print(
                f"worker {worker.name} ready: {', '.join(worker.queues)}", highlight=False
            )
            await worker.run()
            return worker.stats
    finally:
        if closing is not None:
            await closing()
