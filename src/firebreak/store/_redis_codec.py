"""Encoding of `RedisStore` records: Redis hashes (all strings) to and from records."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from firebreak.store import _rules
from firebreak.store.base import (
    DeadLetter,
    ReviewItem,
    ReviewStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    seconds,
)

__all__ = ["dead", "member_id", "num", "pairs", "review", "run", "step", "strs", "ttl_ms"]


def strs(h: Mapping[Any, Any]) -> dict[str, str]:
    """A hash as redis-py returns it, typed as the ``str -> str`` it is (decoded replies)."""
    return {str(k): str(v) for k, v in h.items()}


def pairs(flat: Sequence[Any]) -> dict[str, str]:
    """A flat ``HGETALL`` reply from a script, as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


def num(value: str | None) -> float | None:
    """A stored number, or ``None`` for a missing or empty field."""
    return None if value is None or value == "" else float(value)


def ttl_ms(ttl: float | timedelta | None) -> str:
    """A TTL as milliseconds for a script; ``''`` for none."""
    return "" if ttl is None else str(max(1, round(seconds(ttl) * 1000)))


def run(h: Mapping[str, str], run_id: str) -> RunRecord:
    """A run from its hash."""
    return RunRecord(
        run_id=run_id,
        workflow=h["workflow"],
        status=RunStatus(h["status"]),
        input=_rules.loads(h["input"]),
        created_at=float(h["created_at"]),
        updated_at=float(h["updated_at"]),
        resume_at=num(h.get("resume_at")),
        result=_rules.loads(h["result"]),
        error=_rules.loads(h["error"]),
        lease_owner=h.get("lease_owner"),
        lease_token=int(h["lease_token"]),
        lease_expires=num(h.get("lease_expires")),
    )


def step(run_id: str, agent: str, values: Sequence[str | None], seq: float) -> StepRecord:
    """A step from its six hash fields (s o a e d c) and its seq."""
    status, output, attempts, error, reason, completed = values
    return StepRecord(
        run_id=run_id,
        agent=agent,
        status=StepStatus(str(status)),
        output=_rules.loads(output),
        attempts=int(str(attempts)),
        error=_rules.loads(error),
        degraded_reason=_rules.loads(reason),
        seq=int(seq),
        completed_at=float(str(completed)),
    )


def dead(h: Mapping[str, str]) -> DeadLetter:
    """A dead letter from its hash."""
    steps = _rules.loads(h["steps"])
    return DeadLetter(
        id=h["id"],
        run_id=h["run_id"],
        workflow=h["workflow"],
        reason=h["reason"],
        error=_rules.loads(h["error"]),
        input=_rules.loads(h["input"]),
        created_at=float(h["created_at"]),
        steps=None if steps is None else {k: _rules.step_from_dict(v) for k, v in steps.items()},
    )


def review(h: Mapping[str, str]) -> ReviewItem:
    """A review item from its hash."""
    return ReviewItem(
        id=h["id"],
        run_id=h["run_id"],
        workflow=h["workflow"],
        agent=h["agent"],
        reason=h["reason"],
        suggestions=_rules.loads(h["suggestions"]),
        context=_rules.loads(h["context"]),
        status=ReviewStatus(h["status"]),
        value=_rules.loads(h["value"]),
        created_at=float(h["created_at"]),
        resolved_at=num(h.get("resolved_at")),
    )


def member_id(h: Mapping[str, str]) -> str:
    """The run id of a run hash, from its index member."""
    # The index member is "<16-digit counter>:<run_id>"; the hash keeps it.
    return h["member"][17:]
