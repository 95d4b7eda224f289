"""``firebreak serve``: a Prometheus endpoint (``/metrics``, ``/healthz``) until stopped.

The process exports what happens in it (runs, attempts, retries, breakers, as every
process that calls `install_metrics` does) and, with ``--store``, the dead-letter and
review queue sizes read from the store every ``--poll`` seconds, whoever queued them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from firebreak.store import CheckpointStore, SQLiteStore, open_store

from .common import err_console
from .exits import CliError, ExitCode, cli_errors, run_async

if TYPE_CHECKING:
    from firebreak.observability import MetricsServer, PrometheusMetrics

__all__ = ["register", "serve_command"]

log = logging.getLogger("firebreak.serve")

MetricsPort = Annotated[
    int,
    typer.Option(
        "--metrics-port",
        metavar="PORT",
        min=0,
        max=65535,
        help="Serve /metrics and /healthz on this TCP port (0: any free port, printed).",
    ),
]
Host = Annotated[
    str,
    typer.Option(
        "--host", metavar="ADDRESS", help="Listen on this address (0.0.0.0: every interface)."
    ),
]
QueueStore = Annotated[
    str | None,
    typer.Option(
        "--store",
        metavar="URL",
        help="Also export the dead-letter and review queue sizes of this checkpoint store.",
        show_default=False,
    ),
]
Poll = Annotated[
    float,
    typer.Option(
        "--poll", metavar="SECONDS", min=0.1, help="How often to read the queue sizes (--store)."
    ),
]
LogJson = Annotated[bool, typer.Option("--log-json", help="Write logs as JSON lines on stderr.")]


def register(app: typer.Typer) -> None:
    """Add the ``serve`` command to `app` (the ``firebreak`` command line)."""
    app.command("serve")(serve_command)


def serve_command(
    *,
    metrics_port: MetricsPort = 9464,
    host: Host = "127.0.0.1",
    store: QueueStore = None,
    poll: Poll = 5.0,
    log_json: LogJson = False,
) -> None:
    """Serve Prometheus metrics on /metrics (and /healthz) until SIGTERM or Ctrl-C.

    With --store, the dead-letter and review queue sizes are read from the store every
    --poll seconds. Step, retry and breaker metrics come from the processes that run
    workflows: call firebreak.observability.install_metrics() and start_metrics_server()
    there. Alert rules and a Grafana dashboard ship in deploy/.
    """
    with cli_errors(err_console):
        try:
            from firebreak.observability import (  # noqa: PLC0415 - an optional extra
                configure_logging,
                install_metrics,
                start_metrics_server,
            )
        except ImportError as exc:
            raise CliError(
                "firebreak serve needs the prometheus extra: pip install 'firebreak[prometheus]'"
            ) from exc
        try:  # a bad URL: exit 2 before listening
            opened = open_store(store) if store is not None else None
        except ValueError as exc:
            raise CliError(str(exc)) from exc
        if isinstance(opened, SQLiteStore) and not opened.path.exists():
            # Not fatal: a metrics sidecar may start before the application's first run
            # makes the file (exiting would crash-loop it). But a typo shows here.
            err_console.print(
                f"[yellow]warning:[/] no store at {escape(str(opened.path))} yet: serving the "
                "queue sizes of the store made there, empty until runs are written to it",
                highlight=False,
            )

        def listen() -> MetricsServer:
            try:
                return start_metrics_server(metrics_port, host=host, metrics=metrics)
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise CliError(f"cannot listen on {host}:{metrics_port}: {reason}") from exc

        with _logging_configured(configure_logging, json=log_json):
            metrics = install_metrics()
            try:
                run_async(_serve(listen, metrics, opened, poll))
            finally:
                metrics.close()
    raise typer.Exit(ExitCode.OK)


@contextlib.contextmanager
def _logging_configured(configure: Callable[..., logging.Handler], *, json: bool) -> Iterator[None]:
    """Logs of the ``firebreak`` logger to stderr while serving; as they were afterwards."""
    logger = logging.getLogger("firebreak")
    level, propagate = logger.level, logger.propagate
    handler = configure(json=json)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        handler.close()
        logger.setLevel(level)
        logger.propagate = propagate


async def _serve(
    listen: Callable[[], MetricsServer],
    metrics: PrometheusMetrics,
    store: CheckpointStore | None,
    poll: float,
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    handled: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform
            loop.add_signal_handler(signum, stop.set)
            handled.append(signum)
    try:
        async with contextlib.AsyncExitStack() as stack:
            if store is not None:
                await stack.enter_async_context(store)  # store errors: exit 6
            server = listen()
            stack.callback(server.close)
            where = f"{server.url} (and /healthz)"
            queues = " with queue sizes from the store" if store is not None else ""
            err_console.print(
                f"serving metrics on {where}{queues}; SIGTERM or Ctrl-C stops",
                highlight=False,
                soft_wrap=True,
            )
            if store is not None:
                await _poll(metrics, store, poll, stop)
            else:
                await stop.wait()
        err_console.print("stopped", highlight=False)
    finally:
        for signum in handled:
            loop.remove_signal_handler(signum)


async def _poll(
    metrics: PrometheusMetrics, store: CheckpointStore, every: float, stop: asyncio.Event
) -> None:
    """Refresh the queue gauges until `stop`; a failed read is logged and tried again."""
    while not stop.is_set():
        try:
            await metrics.refresh_queues(store)
        except Exception:  # the exporter outlives a store hiccup
            log.warning("could not read the queue sizes from the store", exc_info=True)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)
