"""Reaching the servers that server-backed tests need (Redis, PostgreSQL, RabbitMQ, ...).

`require_server` probes a server's TCP port once per session (1 s timeout). If nothing
answers, the test fails under ``CI=true`` (CI must exercise every backend, so a missing
server is a broken build, never a silent skip) and skips with the reason otherwise.
``scripts/test.py`` starts throwaway servers and exports their URLs.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlsplit

import pytest

__all__ = ["in_ci", "require_server"]

DEFAULT_PORTS = {
    "redis": 6379,
    "rediss": 6379,
    "postgresql": 5432,
    "postgres": 5432,
    "amqp": 5672,
    "amqps": 5671,
    "nats": 4222,
    "kafka": 9092,
}
PROBE_TIMEOUT = 1.0


def in_ci() -> bool:
    """Whether this run is CI (``CI=true``, as GitHub Actions and most CIs set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


@functools.cache
def _unreachable(host: str, port: int) -> str | None:
    """Why nothing answers at host:port, or None if something does (cached per session)."""
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def require_server(kind: str, url: str) -> None:
    """Return if `url`'s server accepts TCP connections; else fail (CI) or skip the test.

    Args:
        kind: what the server is, for the message ("redis", "postgres", "rabbitmq", ...).
        url: ``scheme://[user@]host[:port][/...]``; the scheme's usual port if none is given.
    """
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    if port is None:
        raise ValueError(f"{kind}: no port in {url!r} and none known for {parts.scheme!r}")
    why = _unreachable(host, port)
    if why is None:
        return
    reason = f"{kind} server not reachable at {host}:{port} ({why})"
    if in_ci():
        pytest.fail(f"{reason}; CI=true, so this fails instead of skipping", pytrace=False)
    pytest.skip(f"{reason}; start one (scripts/test.py does) or set its URL")
