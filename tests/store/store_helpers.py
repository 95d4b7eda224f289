"""Helpers shared by the store tests."""

from __future__ import annotations

from firebreak.store import CheckpointStore, Lease, StepRecord


async def leased(store: CheckpointStore, run_id: str = "r1", owner: str = "orch-1") -> Lease:
    """Create a run and take its lease."""
    await store.create_run(run_id, "wf", {"n": 1})
    return await store.acquire_lease(run_id, owner, ttl=30)


def step(run_id: str, agent: str, output: object = None, **kw: object) -> StepRecord:
    """A succeeded step unless told otherwise."""
    kw.setdefault("status", "succeeded")
    return StepRecord(run_id=run_id, agent=agent, output=output, **kw)  # type: ignore[arg-type]
