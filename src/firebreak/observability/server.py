"""A small HTTP endpoint for Prometheus: ``/metrics`` and ``/healthz``, in a thread.

>>> from firebreak.observability import install_metrics, start_metrics_server
>>> metrics = install_metrics()
>>> server = start_metrics_server(0, metrics=metrics)   # port 0: any free port
>>> server.url.endswith("/metrics")
True
>>> server.close(); metrics.close()
"""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

from firebreak.observability.prometheus import PrometheusMetrics

__all__ = ["MetricsServer", "start_metrics_server"]


class _Handler(BaseHTTPRequestHandler):
    """Answers ``GET /metrics`` (the exposition format) and ``GET /healthz`` (``ok``)."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        """Serve one request."""
        path = urlsplit(self.path).path
        if path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
            self._reply(200, content_type, encoder(self.server.registry))
        elif path == "/healthz":
            self._reply(200, "text/plain; charset=utf-8", b"ok\n")
        else:
            self._reply(404, "text/plain; charset=utf-8", b"not found: try /metrics\n")

    def _reply(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        """Stay quiet: a scrape every few seconds is not news."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    registry: CollectorRegistry


class _Server6(_Server):
    address_family = socket.AF_INET6


class MetricsServer:
    """A running ``/metrics`` endpoint; `close` stops it and frees the port.

    Use `start_metrics_server` to build one; it is also a context manager.
    """

    def __init__(self, registry: CollectorRegistry, *, host: str, port: int) -> None:
        kind = _Server6 if ":" in host else _Server
        self._server = kind((host, port), _Handler)
        self._server.registry = registry
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="firebreak-metrics",
            daemon=True,
        )
        self._thread.start()
        self._closed = False

    @property
    def host(self) -> str:
        """The address it listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port it listens on (the one picked, when asked for port 0)."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port/metrics``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving, wait for the serving thread, close the socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def start_metrics_server(
    port: int = 9464,
    *,
    host: str = "127.0.0.1",
    metrics: PrometheusMetrics | None = None,
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` and ``/healthz`` over HTTP in a background thread.

    Args:
        port: the TCP port; 0 picks a free one (read it back from ``.port``).
        host: the address to listen on; ``0.0.0.0`` to be scraped from other hosts.
        metrics: the subscriber whose registry to serve (see `install_metrics`).
        registry: a registry to serve instead; default the one of `metrics`, else
            ``prometheus_client.REGISTRY``.

    Returns:
        The running server; call ``close()`` to stop it.
    """
    if registry is None:
        registry = metrics.registry if metrics is not None else REGISTRY
    return MetricsServer(registry, host=host, port=port)
