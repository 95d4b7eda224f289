"""Decisions every backend makes the same way, kept in one place so they cannot drift."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any

from firebreak.errors import LeaseHeld, StaleLease, StoreError
from firebreak.store.base import (
    JSON,
    STEP_TRANSITIONS,
    Lease,
    ReviewStatus,
    RunStatus,
    StepRecord,
    StepStatus,
)

__all__ = [
    "RunUpdate",
    "check_fence",
    "check_same_run",
    "check_transition",
    "current_lease",
    "decide_lease",
    "dumps",
    "loads",
    "new_id",
    "review_status",
    "step_from_dict",
    "step_to_dict",
]

# One encoder, reused: json.dumps with options builds a new encoder on every call. The C
# encoder is built once too (JSONEncoder.encode makes one per call); it runs without the
# circular-reference check, whose marker table an error half-way would leave dirty, so a
# cycle ends in RecursionError, reported below as the stdlib reports it.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_FLAGS = (False, False, False)  # sort_keys, skipkeys, allow_nan: as `_ENCODER`'s
_C_ENCODE = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", *_FLAGS)
)
# A step becoming one of these (a resolved review) is committed then, so it takes a new seq.
RESEQUENCE = frozenset({StepStatus.SUCCEEDED, StepStatus.DEGRADED})


def dumps(value: JSON) -> str:
    """Encode a JSON value compactly, keeping non-ASCII text readable."""
    kind = type(value)
    # A text (what an LLM agent most often returns) or an integer needs no encoder: the
    # encoder's own escaping, or the int's repr, directly (300 -> 60-120 ns a value).
    if kind is str:
        return encode_basestring(value)
    if kind is int:
        return int.__repr__(value)
    if _C_ENCODE is None:  # pragma: no cover - CPython always has the C encoder
        return _ENCODER.encode(value)
    try:
        return "".join(_C_ENCODE(value, 0))
    except RecursionError:
        raise ValueError("Circular reference detected (or nesting too deep)") from None


def loads(text: str | None) -> JSON:
    """Decode what `dumps` wrote; SQL ``NULL`` reads as ``None``."""
    return None if text is None else json.loads(text)


def new_id() -> str:
    """Return a fresh random id for a queue entry."""
    return uuid.uuid4().hex


def decide_lease(
    *,
    run_id: str,
    owner: str,
    current_owner: str | None,
    current_token: int,
    current_expires: float | None,
    now: float,
    ttl: float,
) -> Lease:
    """Return the lease `owner` gets, or raise `LeaseHeld`.

    The holder of an unexpired lease may take it again at once (a restarted process with
    a stable owner id), but every acquisition, re-entry included, gets the next token: a
    second driver under the same owner id fences the first instead of running beside it.
    """
    live = current_owner is not None and current_expires is not None and current_expires > now
    if live and current_owner != owner:
        assert current_owner is not None  # noqa: S101  -- narrowed by `live`
        assert current_expires is not None  # noqa: S101
        raise LeaseHeld(run_id, owner=current_owner, expires_at=current_expires)
    return Lease(run_id=run_id, owner=owner, token=current_token + 1, expires_at=now + ttl)


@dataclass(frozen=True, slots=True)
class RunUpdate:
    """Encoded arguments of `set_run_status` and `finish_run`, as the SQL stores write them."""

    status: RunStatus
    result: str | None
    error: str | None
    resume_at: float | None
    now: float

    @classmethod
    def encode(
        cls,
        status: RunStatus | str,
        result: JSON | None,
        error: dict[str, Any] | None,
        resume_at: float | None,
        now: float,
    ) -> RunUpdate:
        """The update with `result` and `error` as JSON text (``None`` stays NULL)."""
        return cls(
            status=RunStatus(status),
            result=None if result is None else dumps(result),
            error=None if error is None else dumps(error),
            resume_at=resume_at,
            now=now,
        )


def check_same_run(lease: Lease, run_id: str) -> None:
    """Refuse a write to run `run_id` (a step, its state) under a lease on another run."""
    if run_id != lease.run_id:
        raise ValueError(f"a write to run {run_id!r} under a lease on {lease.run_id!r}")


def check_fence(lease: Lease, current_owner: str | None, current_token: int) -> None:
    """Raise `StaleLease` unless `lease` is the run's current, unreleased lease.

    An expired lease nobody has taken over is still current: the token, not the clock,
    fences writers, so a slow but unchallenged orchestrator loses nothing.
    """
    if current_token != lease.token or current_owner != lease.owner:
        raise StaleLease(lease.run_id, token=lease.token)


def current_lease(
    run_id: str, owner: str | None, token: int, expires: float | None
) -> Lease | None:
    """The run's lease as its record holds it; ``None`` when released (no owner)."""
    if owner is None:
        return None
    return Lease(run_id=run_id, owner=owner, token=token, expires_at=expires or 0.0)


def check_transition(run_id: str, agent: str, old: StepStatus, new: StepStatus) -> None:
    """Raise `StoreError` unless a committed step may move from `old` to `new`."""
    if new not in STEP_TRANSITIONS.get(old, frozenset()):
        raise StoreError(f"run {run_id!r}: step {agent!r} cannot go from {old} to {new}")


def review_status(status: str | None) -> ReviewStatus | None:
    """Validate a review-status filter."""
    return None if status is None else ReviewStatus(status)


def step_to_dict(step: StepRecord) -> dict[str, Any]:
    """Serialise a step for a dead-letter snapshot."""
    return {
        "run_id": step.run_id,
        "agent": step.agent,
        "status": str(step.status),
        "output": step.output,
        "attempts": step.attempts,
        "error": step.error,
        "degraded_reason": step.degraded_reason,
        "seq": step.seq,
        "completed_at": step.completed_at,
    }


def step_from_dict(data: dict[str, Any]) -> StepRecord:
    """Rebuild a step serialised by `step_to_dict`."""
    return StepRecord(**data)
