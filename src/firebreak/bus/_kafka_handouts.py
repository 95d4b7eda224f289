"""The hand-out log: how often a message went out, kept on the broker across member deaths.

A message handed out and not settled when its holder dies is re-consumed by the next
owner of its partition, and that redelivery must be counted (a poison task that kills
every worker it reaches must end in the dead letters). The count cannot ride in the
offset commit's metadata: Tansu stores that metadata but answers every OffsetFetch
without it. So each hand-out is first logged as a record, ``h:<offset>:<group>``, in the
partition of the same number of the source topic's log topic (``<topic>.handouts``),
before the work starts; a settle that the committed offset cannot pass yet (a lower
message is still held, so a new owner would re-consume this one) is logged as
``s:<offset>:<group>``, which zeroes its count.

Where a new owner starts reading a log partition is committed with the group, next to
the source partition's own offset: the log offset of the first entry of any message at or
above the committed offset (or the log's end when there is none). A lower value is always
safe (more is read), so it is committed only when the source offset moves.

Cost: one produce per hand-out (in place of the metadata commit the hand-out cost
before, now skipped while the offset stays: get + ack of a backlog on Tansu, localhost,
0.44-0.50 ms a message against 0.53-0.76 ms), one more per out-of-order settle, at a
takeover one read of the log from that position to its end (inside the rebalance), and
one small stored record per hand-out: the logs grow as the task topics do (no retention
is set on either).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

if TYPE_CHECKING:
    from firebreak.bus.kafka import KafkaBus

__all__ = ["SUFFIX", "Takeover", "commit", "log_handout", "log_of", "log_settled", "take_over"]

log = logging.getLogger("firebreak.bus.kafka")

SUFFIX = "handouts"
"""The log topic of a source topic ``T`` is ``T.handouts``."""


def log_of(tp: TopicPartition) -> TopicPartition:
    """The log partition of source partition `tp`."""
    return TopicPartition(f"{tp.topic}.{SUFFIX}", tp.partition)


async def log_handout(bus: KafkaBus, group_id: str, tp: TopicPartition, offset: int) -> int:
    """Log a hand-out of `offset` of `tp` (before the work starts); its log offset."""
    return await _append(bus, f"h:{offset}:{group_id}", tp)


async def log_settled(bus: KafkaBus, group_id: str, tp: TopicPartition, offset: int) -> int:
    """Log that `offset` of `tp` was settled while a lower offset is still held."""
    return await _append(bus, f"s:{offset}:{group_id}", tp)


async def _append(bus: KafkaBus, entry: str, tp: TopicPartition) -> int:
    sent = await bus.producer.send_and_wait(
        log_of(tp).topic, entry.encode(), partition=tp.partition
    )
    return int(sent.offset)


@dataclass(slots=True)
class Takeover:
    """What a new owner of a partition learns from its log."""

    counts: dict[int, int] = field(default_factory=dict)
    """Offset -> hand-outs by earlier owners since it was last settled."""
    first: dict[int, int] = field(default_factory=dict)
    """Offset -> log offset of its first entry read (where a later owner must start)."""
    end: int = 0
    """The log offset after the last entry read."""


async def take_over(
    bus: KafkaBus, kafka: AIOKafkaConsumer, group_id: str, tps: Iterable[TopicPartition]
) -> dict[TopicPartition, Takeover]:
    """Read the logs of `tps` (newly assigned) from their committed positions to the end."""
    tps = list(tps)
    logs = {tp: log_of(tp) for tp in tps}
    committed = await kafka._coordinator.fetch_committed_offsets([*tps, *logs.values()])  # noqa: SLF001 - see commit

    def at(tp: TopicPartition) -> int | None:
        meta = committed.get(tp)
        return meta.offset if meta is not None and meta.offset >= 0 else None

    records = await bus.read({logs[tp]: at(logs[tp]) for tp in tps})
    out: dict[TopicPartition, Takeover] = {}
    for tp in tps:
        found = Takeover(end=at(logs[tp]) or 0)
        start = at(tp) or 0
        for record in records.get(logs[tp], ()):
            found.end = record.offset + 1
            kind, _, rest = (record.value or b"").decode(errors="replace").partition(":")
            offset, _, group = rest.partition(":")
            if group != group_id or not offset.isdigit() or int(offset) < start:
                continue
            number = int(offset)
            found.first.setdefault(number, record.offset)
            found.counts[number] = found.counts.get(number, 0) + 1 if kind == "h" else 0
        out[tp] = found
    return out


async def commit(kafka: AIOKafkaConsumer, offsets: dict[TopicPartition, OffsetAndMetadata]) -> None:
    """Commit `offsets`, log partitions included, in one request of the member.

    aiokafka's public `commit` refuses a partition not assigned to the member, and a log
    partition never is; the group coordinator takes any partition of an existing topic
    from a current member (Apache Kafka and Tansu alike), so this sends the same request
    through the coordinator's own call, which skips only that check.
    """
    coordinator: Any = kafka._coordinator  # noqa: SLF001 - see above
    assignment = kafka._subscription.subscription  # noqa: SLF001 - see above
    await coordinator.commit_offsets(getattr(assignment, "assignment", None), offsets)
