"""The Kafka backend for the bus conformance suite (`conftest.py` plugs it in by its name).

Everything (the broker, the timings) comes from `kafka_backend`: a Tansu broker the tests
start, or ``$FIREBREAK_TEST_KAFKA_URL``.
"""

from __future__ import annotations

from kafka_backend import TIME_SCALE, cleanup, make, require

__all__ = ["TIME_SCALE", "cleanup", "make", "require"]
