"""Task buses: step tasks on per-agent queues for `firebreak worker` processes.

`open_bus` builds the backend a URL names: ``inproc://`` (the default, in this process)
or ``redis://`` (Redis Streams, extra ``redis``). RabbitMQ, NATS JetStream and Kafka
backends plug into the same `TaskBus` protocol and conformance suite.
"""

from __future__ import annotations

import importlib
import os

from firebreak.bus.base import BusPolicy, Consumer, Delivery, TaskBus

__all__ = ["DEFAULT_BUS_URL", "BusPolicy", "Consumer", "Delivery", "TaskBus", "open_bus"]

DEFAULT_BUS_URL = "inproc://"
"""The bus when neither ``bus=`` nor ``$FIREBREAK_BUS`` names one."""

_MODULES = {
    "inproc": "firebreak.bus.inproc",
    "redis": "firebreak.bus.redis",
    "rediss": "firebreak.bus.redis",
    "amqp": "firebreak.bus.rabbitmq",
    "amqps": "firebreak.bus.rabbitmq",
    "nats": "firebreak.bus.nats",
    "kafka": "firebreak.bus.kafka",
}
_EXTRAS = {
    "redis": "redis",
    "rediss": "redis",
    "amqp": "rabbitmq",
    "amqps": "rabbitmq",
    "nats": "nats",
    "kafka": "kafka",
}


def open_bus(url: str | None = None, *, policy: BusPolicy | None = None) -> TaskBus:
    """Build (not connect) the bus a URL names; call ``setup()`` or use ``async with``.

    Args:
        url: ``inproc://[NAME]`` or ``redis://host:port/db[?prefix=..]``; ``None`` means
            ``$FIREBREAK_BUS``, else `DEFAULT_BUS_URL`.
        policy: visibility timeout and maximum deliveries (default: the URL's, else
            `BusPolicy()`).

    Raises:
        ValueError: the scheme is unknown or an option is bad.
        ImportError: the backend's extra is not installed.

    Example:
        >>> bus = open_bus("redis://localhost:6379/0?prefix=billing")
    """
    if url is None:
        url = os.environ.get("FIREBREAK_BUS") or DEFAULT_BUS_URL
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    name = _MODULES.get(scheme) if sep else None
    if name is None:
        raise ValueError(f"bus URL {url!r}: supported schemes are {', '.join(sorted(_MODULES))}")
    try:
        module = importlib.import_module(name)
    except ImportError as exc:
        extra = _EXTRAS.get(scheme, scheme)
        raise ImportError(
            f"bus URL {url!r} needs the {extra!r} extra: pip install 'firebreak[{extra}]'"
        ) from exc
    bus: TaskBus = module.from_url(url, policy=policy)
    return bus
