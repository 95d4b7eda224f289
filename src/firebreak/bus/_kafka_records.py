"""How the Kafka bus reads its records: the ``fb-*`` headers, JSON bodies, the partition.

Shared by the bus (`firebreak.bus.kafka`: producing, reading the dead letters) and its
consumer (`firebreak.bus._kafka_consumer`: handing records out).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

__all__ = ["COUNT", "DUE", "ID", "REASON", "header", "json_object", "key_of", "tp_of"]

ID, COUNT, REASON, DUE = "fb-id", "fb-n", "fb-reason", "fb-due"
"""Headers: the stable message id, the delivery count, the dead-letter reason, due time."""


def header(headers: Iterable[tuple[str, bytes]] | None, name: str, default: str = "") -> str:
    """The value of header `name` (the first one), else `default`."""
    for key, value in headers or ():
        if key == name:
            return value.decode(errors="replace")
    return default


def json_object(raw: bytes | None) -> dict[str, Any] | None:
    """`raw` as a JSON object, or None if it is not one."""
    try:
        value = json.loads(raw or b"")
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def key_of(record: Any) -> str:
    """The record's key as text (firebreak: the run id)."""
    return (record.key or b"").decode(errors="replace")


def tp_of(record: Any) -> TopicPartition:
    """The partition the record was read from."""
    return TopicPartition(record.topic, record.partition)
