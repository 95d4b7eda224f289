"""`InprocBus`: queues in this process, the default bus (``inproc://`` or ``inproc://NAME``).

Orchestrators and workers in one process (and one event loop) reach the same bus by
name. It has every guarantee of the `TaskBus` protocol except surviving the process:
a consumer that stops without acking is a "dead worker", and what it held is redelivered
after the visibility timeout. Bodies are copied through JSON, as a real broker would.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from firebreak._lifecycle import SetupClose
from firebreak.bus.base import BusPolicy, ConsumerBase, Delivery
from firebreak.clock import Clock, system_clock

__all__ = ["InprocBus", "InprocConsumer", "from_url"]

_buses: dict[str, InprocBus] = {}


def from_url(url: str, *, policy: BusPolicy | None = None) -> InprocBus:
    """The process-wide bus named by ``inproc://NAME`` (``inproc://``: ``default``).

    The same name gives the same bus, so an engine and its workers meet; a policy given
    for an existing bus must match its own.
    """
    name = url.partition("://")[2].strip("/") or "default"
    bus = _buses.get(name)
    if bus is None:
        bus = _buses[name] = InprocBus(name=name, policy=policy)
    elif policy is not None and policy != bus.policy:
        raise ValueError(f"inproc bus {name!r} already exists with another policy")
    return bus


@dataclass(slots=True)
class _Message:
    id: str
    key: str
    body: str
    deliveries: int = 0
    owner: str = ""
    since: float = 0.0  # when it was last delivered (or touched), monotonic
    idle_from: float = 0.0  # when it becomes claimable again


class _Group:
    """One consumer group's view of one queue."""

    __slots__ = ("pending", "ready")

    def __init__(self, backlog: Sequence[_Message]) -> None:
        self.ready: deque[_Message] = deque(replace(m) for m in backlog)
        self.pending: dict[str, _Message] = {}


class _Queue:
    __slots__ = ("backlog", "dead", "groups")

    def __init__(self) -> None:
        self.groups: dict[str, _Group] = {}
        self.backlog: list[_Message] = []  # published before any group existed
        self.dead: list[Delivery] = []


class InprocBus(SetupClose):
    """A `TaskBus` inside this process; see the module docstring.

    Args:
        name: the name `from_url` finds it by.
        policy: visibility timeout and maximum deliveries.
        clock: monotonic time for visibility timeouts.
    """

    def __init__(
        self, *, name: str = "default", policy: BusPolicy | None = None, clock: Clock = system_clock
    ) -> None:
        self.name = name
        self.policy = policy or BusPolicy()
        self.clock = clock
        self._queues: dict[str, _Queue] = {}
        self._ids = itertools.count(1)
        self._changed: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"InprocBus(name={self.name!r})"

    @property
    def changed(self) -> asyncio.Event:
        """Set (and replaced) whenever a message may have become available."""
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def setup(self) -> None:
        """Nothing to connect."""

    async def close(self) -> None:
        """Nothing to release: the queues live as long as the process."""

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def group(self, queue: str, group: str) -> _Group:
        """The group's state in `queue`, created with the backlog if new."""
        q = self._queue(queue)
        state = q.groups.get(group)
        if state is None:
            state = q.groups[group] = _Group(q.backlog)
            q.backlog.clear()
        return state

    async def publish(self, queue: str, body: Mapping[str, Any], *, key: str) -> str:
        """Append a message to `queue` for every group (or the backlog, if none yet)."""
        text = json.dumps(body, separators=(",", ":"), allow_nan=False)
        message = _Message(id=str(next(self._ids)), key=key, body=text)
        q = self._queue(queue)
        if not q.groups:
            q.backlog.append(message)
        for state in q.groups.values():
            state.ready.append(replace(message))
        self._notify()
        return message.id

    def _notify(self) -> None:
        event, self._changed = self._changed, None
        if event is not None:
            event.set()

    def consumer(
        self, queues: Sequence[str], *, group: str, name: str, max_in_flight: int = 1
    ) -> InprocConsumer:
        """A consumer of `queues` in `group`."""
        return InprocConsumer(self, list(queues), group=group, name=name, limit=max_in_flight)

    async def dead_letters(self, queue: str, *, limit: int = 100) -> list[Delivery]:
        """Dead letters of `queue`, oldest first."""
        q = self._queues.get(queue)
        return [] if q is None else list(q.dead[:limit])

    async def delete(self, queue: str) -> None:
        """Forget `queue` entirely."""
        self._queues.pop(queue, None)

    def _dead(self, queue: str, message: _Message, reason: str) -> Delivery:
        try:
            body = json.loads(message.body)
        except ValueError:
            body = {}
        dead = Delivery(
            queue=queue,
            id=message.id,
            key=message.key,
            body=body if isinstance(body, dict) else {},
            deliveries=message.deliveries,
            dead=True,
            reason=reason,
        )
        self._queue(queue).dead.append(dead)
        return dead


class InprocConsumer(ConsumerBase[InprocBus]):
    """A member of a consumer group of an `InprocBus`."""

    def __init__(
        self, bus: InprocBus, queues: list[str], *, group: str, name: str, limit: int
    ) -> None:
        super().__init__(bus, queues, group=group, name=name, limit=limit)
        self._held: dict[tuple[str, str], _Message] = {}
        self._closed = False
        for queue in queues:
            bus.group(queue, group)

    @property
    def in_flight(self) -> int:
        """Messages held and not yet settled."""
        return len(self._held)

    def _take(self) -> tuple[Delivery | None, float | None]:
        """A message if one is due, else when the next abandoned one becomes claimable."""
        bus, now = self.bus, self.bus.clock.now()
        next_due: float | None = None
        for queue in self.queues:  # abandoned messages first, as XAUTOCLAIM does
            state = bus.group(queue, self.group)
            for message in state.pending.values():
                if message.owner == self.name and (queue, message.id) in self._held:
                    continue
                if message.idle_from > now:
                    next_due = min(next_due or message.idle_from, message.idle_from)
                    continue
                return self._deliver(queue, state, message, now), None
        for queue in self.queues:
            state = bus.group(queue, self.group)
            if state.ready:
                message = state.ready.popleft()
                return self._deliver(queue, state, message, now), None
        return None, next_due

    def _deliver(self, queue: str, state: _Group, message: _Message, now: float) -> Delivery:
        bus = self.bus
        message.deliveries += 1
        if message.deliveries > bus.policy.max_deliveries:
            state.pending.pop(message.id, None)
            reason = f"delivered {message.deliveries} times (max {bus.policy.max_deliveries})"
            return bus._dead(queue, message, reason)  # noqa: SLF001 - our own bus
        try:
            body = json.loads(message.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            state.pending.pop(message.id, None)
            return bus._dead(queue, message, "unreadable body")  # noqa: SLF001
        message.owner = self.name
        message.since = now
        message.idle_from = now + bus.policy.visibility
        state.pending[message.id] = message
        self._held[(queue, message.id)] = message
        return Delivery(
            queue=queue, id=message.id, key=message.key, body=body, deliveries=message.deliveries
        )

    async def get(self, wait: float) -> Delivery | None:
        """The next message, waiting up to `wait` (also while at `max_in_flight`)."""
        clock = self.bus.clock
        end = clock.now() + wait
        while not self._closed:
            changed = self.bus.changed  # before looking: a change after it wakes us
            due: float | None = None
            if len(self._held) < self.limit:
                delivery, due = self._take()
                if delivery is not None:
                    return delivery
            now = clock.now()
            left = end - now
            if due is not None:
                left = min(left, max(due - now, 0.001))
            if left <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await changed.wait()
        return None

    def _settle(self, delivery: Delivery) -> _Message | None:
        message = self._held.pop((delivery.queue, delivery.id), None)
        if message is None or message.owner != self.name:
            return None  # claimed by another consumer meanwhile: theirs now
        return message

    async def ack(self, delivery: Delivery) -> None:
        """Forget the message."""
        self._held.pop((delivery.queue, delivery.id), None)
        self.bus.group(delivery.queue, self.group).pending.pop(delivery.id, None)
        self.bus._notify()  # noqa: SLF001 - a slot is free

    async def release(self, delivery: Delivery) -> None:
        """Make the message claimable at once, without counting this delivery."""
        message = self._settle(delivery)
        if message is not None:
            message.deliveries -= 1
            message.owner = ""
            message.idle_from = 0.0
        self.bus._notify()  # noqa: SLF001

    async def reject(self, delivery: Delivery, reason: str) -> None:
        """Dead-letter the message now."""
        self._held.pop((delivery.queue, delivery.id), None)
        state = self.bus.group(delivery.queue, self.group)
        message = state.pending.pop(delivery.id, None)
        if message is not None:
            self.bus._dead(delivery.queue, message, reason)  # noqa: SLF001
        self.bus._notify()  # noqa: SLF001

    async def touch(self, delivery: Delivery) -> None:
        """Restart the message's visibility timeout, if it is still ours."""
        message = self._held.get((delivery.queue, delivery.id))
        if message is not None and message.owner == self.name:
            message.idle_from = self.bus.clock.now() + self.bus.policy.visibility

    async def close(self) -> None:
        """Stop; held messages come back after their visibility timeout, as on any bus."""
        self._closed = True
        self._held.clear()
        self.bus._notify()  # noqa: SLF001
