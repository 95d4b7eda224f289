"""The Kafka bus's consumer-group membership: joining, the assignor, the rebalance hooks.

A `KafkaConsumer` (`firebreak.bus._kafka_consumer`) is a group member through `join`;
what the group machinery needs of it is the small `Member` protocol. The rules it
implements (holders keep their partitions, the rest go to the members waiting in `get`)
are told in the module docstring of `firebreak.bus.kafka`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.coordinator.protocol import (  # type: ignore[import-untyped]
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from aiokafka.structs import TopicPartition  # type: ignore[import-untyped]

from firebreak.bus._kafka_records import json_object

if TYPE_CHECKING:
    from firebreak.bus.kafka import KafkaBus

__all__ = ["Member", "join"]


class Member(Protocol):
    """What the group machinery needs of a member (a `KafkaConsumer`)."""

    @property
    def waiting(self) -> bool:
        """Whether a `get` is waiting now (such members are given partitions)."""

    def holding(self) -> list[tuple[str, int]]:
        """The partitions the member keeps at a join: ``(topic, partition)``."""

    async def revoked(self, revoked: set[TopicPartition]) -> None:
        """The rebalance took `revoked` away (for now)."""

    async def assigned(self, assigned: set[TopicPartition]) -> None:
        """The rebalance gave the member `assigned`."""


async def join(
    bus: KafkaBus, member: Member, *, group: str, name: str, topics: Iterable[str]
) -> AIOKafkaConsumer:
    """Start an aiokafka consumer for `member` in `group` over `topics` (hand commits).

    It starts joining at once; `member`'s `revoked` and `assigned` run at each rebalance.
    """
    kafka = AIOKafkaConsumer(
        bootstrap_servers=bus.servers,
        group_id=bus.group_id(group),
        client_id=name,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=int(bus.session_timeout * 1000),
        heartbeat_interval_ms=int(bus.heartbeat_interval * 1000),
        rebalance_timeout_ms=int(bus.rebalance_timeout * 1000),
        partition_assignment_strategy=(_ActiveAssignor(member),),
        retry_backoff_ms=20,
        fetch_max_wait_ms=max(int(bus.fetch_max_wait * 1000), 1),
    )
    await kafka.start()
    _leave_at_generation_zero(kafka)
    kafka.subscribe(sorted(topics), listener=_Listener(member))
    return kafka


class _ActiveAssignor:
    """Holders keep their partitions; the rest round-robin over the members waiting in `get`.

    A member that holds unsettled messages of a partition keeps it (it is alive: it
    rejoined), so a rebalance never hands a message that is still being worked on to
    another member; its visibility timer is what abandons it. Other partitions go
    round-robin to the members waiting in `get` at the join (to all, if none is).
    """

    name = "firebreak-active"
    version = 0

    def __init__(self, member: Member) -> None:
        self.member = member

    def metadata(self, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        data = {"active": self.member.waiting, "holding": self.member.holding()}
        return ConsumerProtocolMemberMetadata(
            self.version, sorted(topics), json.dumps(data).encode()
        )

    def assign(
        self, cluster: Any, members: Mapping[str, ConsumerProtocolMemberMetadata]
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        def data(meta: ConsumerProtocolMemberMetadata) -> dict[str, Any]:
            return json_object(getattr(meta, "user_data", b"")) or {}

        eligible = sorted(m for m, meta in members.items() if data(meta).get("active"))
        eligible = eligible or sorted(members)
        holder: dict[tuple[str, int], str] = {}
        for member in sorted(members):
            for topic, partition in data(members[member]).get("holding") or ():
                holder.setdefault((str(topic), int(partition)), member)
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        chosen: dict[str, dict[str, list[int]]] = {m: {} for m in members}
        turn = 0
        for topic in topics:
            takers = [m for m in eligible if topic in members[m].subscription] or [
                m for m in sorted(members) if topic in members[m].subscription
            ]
            for partition in sorted(cluster.partitions_for_topic(topic) or ()):
                if (owner := holder.get((topic, partition))) is not None:
                    chosen[owner].setdefault(topic, []).append(partition)
                    continue
                member = takers[turn % len(takers)]
                turn += 1
                chosen[member].setdefault(topic, []).append(partition)
        return {
            m: ConsumerProtocolMemberAssignment(self.version, sorted(parts.items()), b"")
            for m, parts in chosen.items()
        }

    def on_assignment(self, assignment: ConsumerProtocolMemberAssignment) -> None:
        """Nothing to remember."""


def _leave_at_generation_zero(kafka: AIOKafkaConsumer) -> None:
    """Make `kafka` leave its group on `stop` in generation 0 too.

    aiokafka sends LeaveGroup only when the generation is above 0, the first one on
    Apache Kafka; Tansu numbers generations from 0, so the first member of a group never
    left it, and the next rebalance waited out its session timeout. The coordinator
    calls this once its heartbeat and coordination have stopped, so raising the number
    it no longer uses is harmless; the request itself carries only the member id.
    """
    coordinator = getattr(kafka, "_coordinator", None)
    leave = getattr(coordinator, "_maybe_leave_group", None)
    if coordinator is None or leave is None:  # pragma: no cover - another aiokafka
        return

    async def leave_any_generation() -> None:
        if coordinator.generation == 0 and coordinator.member_id:
            coordinator.generation = 1
        await leave()

    coordinator._maybe_leave_group = leave_any_generation  # noqa: SLF001 - see above


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: Member) -> None:
        self.member = member

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self.member.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        await self.member.assigned(set(assigned))
