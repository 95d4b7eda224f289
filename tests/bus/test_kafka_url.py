"""Kafka bus URL options (no broker needed: the bus is built, not connected)."""

from __future__ import annotations

import pytest

from firebreak.bus import open_bus
from firebreak.bus.kafka import KafkaBus, from_url


def test_from_url_reads_options_and_open_bus_routes_kafka() -> None:
    bus = from_url(
        "kafka://h1:9092,h2:9093?prefix=billing&visibility_timeout=7&max_deliveries=2"
        "&partitions=4&session_timeout=3&fetch_max_wait=0.01"
    )
    assert bus.servers == "h1:9092,h2:9093"
    assert (bus.prefix, bus.policy.visibility, bus.policy.max_deliveries) == ("billing", 7, 2)
    assert (bus.partitions, bus.session_timeout, bus.fetch_max_wait) == (4, 3, 0.01)
    assert from_url("kafka://h:9092").fetch_max_wait == 0.5  # aiokafka's default
    assert isinstance(open_bus("kafka://localhost:9092"), KafkaBus)
    with pytest.raises(ValueError, match="unknown option"):
        from_url("kafka://localhost?bogus=1")
    with pytest.raises(ValueError, match="fetch_max_wait"):
        from_url("kafka://localhost?fetch_max_wait=0")
