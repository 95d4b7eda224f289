"""Contract checks: versioned shared state and compare-and-set under concurrent writers."""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

import asyncio

from firebreak.errors import StaleLease, StateConflict
from firebreak.testing._harness import ConformanceEnv, leased, raises


async def check_shared_state_starts_empty_and_versions(env: ConformanceEnv) -> None:
    """State starts at ``(0, {})``; each CAS bumps the version; a stale CAS changes nothing."""
    store = env.store
    assert await store.get_state("r1") == (0, {})
    assert await store.cas_state("r1", 0, {"k": "v"}) == 1
    assert await store.cas_state("r1", 1, {"k": "w", "n": [1]}) == 2
    assert await store.get_state("r1") == (2, {"k": "w", "n": [1]})
    with raises(StateConflict) as conflict:
        await store.cas_state("r1", 1, {"lost": True})
    assert (conflict.value.run_id, conflict.value.expected, conflict.value.actual) == ("r1", 1, 2)
    assert await store.get_state("r1") == (2, {"k": "w", "n": [1]})


async def check_concurrent_cas_exactly_one_writer_wins(env: ConformanceEnv) -> None:
    """Twenty-five concurrent CAS from one version: one wins, the rest see `StateConflict`."""
    store = env.store
    await store.cas_state("r1", 0, {"v": -1})

    async def write(i: int) -> int | StateConflict:
        try:
            return await store.cas_state("r1", 1, {"v": i})
        except StateConflict as exc:
            return exc

    results = await asyncio.gather(*(write(i) for i in range(25)))
    winners = [i for i, r in enumerate(results) if r == 2]
    assert len(winners) == 1
    assert all(isinstance(r, StateConflict) and r.actual == 2 for r in results if r != 2)
    assert await store.get_state("r1") == (2, {"v": winners[0]})


async def check_cas_under_a_lost_lease_writes_nothing(env: ConformanceEnv) -> None:
    """A CAS given a lease is fenced: once another driver took the run, `StaleLease`.

    An orchestrator whose lease expired while its agent ran could still write the state
    of the run its successor had finished.
    """
    store, wall = env.store, env.wall
    first = await leased(store)
    assert await store.cas_state("r1", 0, {"by": "first"}, lease=first) == 1
    wall.advance(31)
    second = await store.acquire_lease("r1", "orch-2", ttl=30)
    with raises(StaleLease):
        await store.cas_state("r1", 1, {"by": "zombie"}, lease=first)
    assert await store.get_state("r1") == (1, {"by": "first"})
    assert await store.cas_state("r1", 1, {"by": "second"}, lease=second) == 2
    assert await store.cas_state("r1", 2, {"by": "anyone"}) == 3  # no lease: not fenced


CHECKS = (
    check_shared_state_starts_empty_and_versions,
    check_concurrent_cas_exactly_one_writer_wins,
    check_cas_under_a_lost_lease_writes_nothing,
)
