"""The `TaskBus` protocol: step tasks on per-agent queues, consumed by groups of workers.

A bus carries work, never results: a worker commits a step's result to the store, then
acks the task. Delivery is at-least-once; the store's first-commit-wins makes a step's
effect on its run exactly-once.

What every backend guarantees (one conformance suite checks it, `firebreak.bus.conformance`):

- **order per queue**: one consumer receives a queue's messages in publish order, so the
  tasks of one run (its ``key``) arrive in the order they were published;
- **at-least-once**: a published message is delivered until a consumer acks it;
- **redelivery**: a message a consumer holds without acking (it died) goes to another
  consumer of the group once the policy's `visibility_timeout` has passed;
- **dead letters**: a message delivered more than `max_deliveries` times (a poison task that
  kills its worker) moves to the queue's dead-letter destination instead;
- **backpressure**: a consumer never holds more than its ``max_in_flight`` unacked messages.

Queues named ``replies.<name>`` (`REPLY_PREFIX`) are an orchestrator's reply queue. What
they carry are notices that may be lost (the orchestrator also reads the store), so a
backend may keep them more cheaply than task queues: in memory, unreplicated, deleted
when long unused (RabbitMQ does; a quorum queue's disk write costs every step a few
hundred microseconds).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar, runtime_checkable

from firebreak._urls import shown
from firebreak.errors import BusError, FirebreakError

__all__ = [
    "REPLY_PREFIX",
    "BusPolicy",
    "Consumer",
    "ConsumerBase",
    "Delivery",
    "TaskBus",
    "check_consumer",
    "is_reply_queue",
    "setup_bus",
]

REPLY_PREFIX = "replies."
"""The name prefix of reply queues: notices that may be lost (see the module docstring)."""


async def setup_bus(bus: TaskBus) -> None:
    """`bus.setup()`, a failure to connect raised as one `BusError` naming the server.

    Each client library fails in its own words (redis-py, aiormq, nats-py, aiokafka), some
    with pages of chained errors; a bad option (`ValueError`, `TypeError`) goes up as is.
    """
    try:
        await bus.setup()
    except (FirebreakError, ValueError, TypeError):
        raise
    except Exception as exc:
        servers = getattr(bus, "servers", None)  # NATS: a list of them; Kafka: one string
        if servers is None or isinstance(servers, str):
            urls = [getattr(bus, "url", "") or servers or ""]
        else:
            urls = list(servers)
        where = ", ".join(shown(str(url)) for url in urls if url) or repr(bus)
        text = str(exc).strip().splitlines()
        reason = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
        raise BusError(f"bus {where}: cannot connect: {reason}") from exc


def is_reply_queue(queue: str) -> bool:
    """Whether `queue` is a reply queue, whose messages a backend may keep more cheaply."""
    return queue.startswith(REPLY_PREFIX)


def _seconds(value: float | timedelta, name: str) -> float:
    number = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if not number > 0:
        raise ValueError(f"{name} must be a positive duration, got {value!r}")
    return number


@dataclass(frozen=True, slots=True, kw_only=True)
class BusPolicy:
    """How long a consumer may hold a message, and how often it may come back.

    Example:
        >>> BusPolicy(visibility_timeout=60, max_deliveries=3)
    """

    visibility_timeout: float | timedelta = 30.0
    """Seconds an unacked message stays with its consumer before another may claim it."""
    max_deliveries: int = 5
    """Deliveries after which a message goes to the dead-letter destination instead."""

    def __post_init__(self) -> None:
        object.__setattr__(
            self,
            "visibility_timeout",
            _seconds(self.visibility_timeout, "visibility_timeout"),
        )
        if isinstance(self.max_deliveries, bool) or self.max_deliveries < 1:
            raise ValueError(f"max_deliveries must be >= 1, got {self.max_deliveries!r}")

    @property
    def visibility(self) -> float:
        """`visibility_timeout` in seconds."""
        value = self.visibility_timeout
        return value.total_seconds() if isinstance(value, timedelta) else value


@dataclass(frozen=True, slots=True, kw_only=True)
class Delivery:
    """One delivery of one message to one consumer."""

    queue: str
    """The queue it came from."""
    id: str
    """The backend's id of the message (the same on every redelivery)."""
    key: str
    """The ordering key it was published with (firebreak uses the run id)."""
    body: dict[str, Any] = field(default_factory=dict)
    """The message, a JSON object."""
    deliveries: int = 1
    """How many times it has been delivered, this time included."""
    dead: bool = False
    """It went to the dead-letter destination on this delivery (too many deliveries, or
    an unreadable body): the consumer must not ack it; it may record why the work failed."""
    reason: str = ""
    """Why it is dead (dead letters only)."""


@runtime_checkable
class Consumer(Protocol):
    """One member of a consumer group, reading one or more queues.

    Example:
        >>> consumer = bus.consumer(["invoice.extract"], group="workers", name="w1")
        >>> delivery = await consumer.get(wait=1.0)
        >>> ...  # do the work, commit its result
        >>> await consumer.ack(delivery)
    """

    @property
    def in_flight(self) -> int:
        """Messages delivered to this consumer and not yet acked, released or rejected."""
        ...

    async def get(self, wait: float) -> Delivery | None:
        """The next message, or ``None`` after `wait` seconds without one.

        Waits (up to `wait`) while `in_flight` is at the consumer's ``max_in_flight``:
        that is the backpressure. Messages abandoned by dead consumers come first.
        """
        ...

    async def ack(self, delivery: Delivery) -> None:
        """Done with it: it will not be delivered again."""
        ...

    async def release(self, delivery: Delivery) -> None:
        """Hand it back unfinished (a graceful shutdown): redelivered soon, not counted."""
        ...

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Move it to the dead-letter destination now."""
        ...

    async def touch(self, delivery: Delivery) -> None:
        """Still working on it: restart its visibility timeout."""
        ...

    async def close(self) -> None:
        """Stop consuming; what is still held comes back after the visibility timeout."""
        ...


@runtime_checkable
class TaskBus(Protocol):
    """Queues of step tasks; one backend per URL scheme, built with `open_bus`.

    Nothing connects before `setup` (or ``async with``).

    Example:
        >>> async with open_bus("redis://localhost:6379/0") as bus:
        ...     await bus.publish("invoice.extract", {"run_id": "inv-42"}, key="inv-42")
    """

    policy: BusPolicy

    async def setup(self) -> None:
        """Connect; idempotent."""
        ...

    async def close(self) -> None:
        """Release every resource; idempotent."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def publish(self, queue: str, body: Mapping[str, Any], *, key: str) -> str:
        """Append a message (a JSON object) to `queue`; return its id."""
        ...

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> Consumer:
        """A consumer named `name` in `group` over `queues` (created if missing)."""
        ...

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """The messages of `queue` that went to its dead-letter destination, oldest first."""
        ...

    async def delete(self, queue: str) -> None:
        """Remove `queue`, its groups and its dead letters; a no-op if missing."""
        ...


def check_consumer(queues: list[str], limit: int) -> None:
    """Refuse a consumer of no queue or with no room for a message (every backend's rule)."""
    if not queues:
        raise ValueError("a consumer needs at least one queue")
    if limit < 1:
        raise ValueError(f"max_in_flight must be >= 1, got {limit}")


BusT = TypeVar("BusT")


class ConsumerBase(Generic[BusT]):
    """What every backend's consumer keeps of how it was made.

    Its bus, queues, group, name and room (``max_in_flight``), checked by `check_consumer`.
    """

    def __init__(self, bus: BusT, queues: list[str], *, group: str, name: str, limit: int) -> None:
        check_consumer(queues, limit)
        self.bus = bus
        self.queues = queues
        self.group = group
        self.name = name
        self.limit = limit
