"""Contract checks of the optional abilities (`store.base`), for the stores that offer them.

A store without an ability skips its check (`CheckSkipped`): the engine then composes the
same behaviour from the `CheckpointStore` operations. A store with it must agree with
those operations exactly.
"""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

from firebreak.store.base import SupportsLeaseAndStep
from firebreak.testing._harness import CheckSkipped, ConformanceEnv, leased, step


async def check_lease_and_step_agree_with_run_and_steps(env: ConformanceEnv) -> None:
    """`get_lease_and_step` returns the run's current lease and the agent's committed step.

    No run: nothing. A leased run: its lease, and the step once committed (equal to its
    `get_steps` record). A released lease: none. A later holder: that holder's token.
    """
    store, wall = env.store, env.wall
    if not isinstance(store, SupportsLeaseAndStep):
        raise CheckSkipped("the store does not offer get_lease_and_step (optional)")
    assert await store.get_lease_and_step("ghost", "a") == (None, None)
    lease = await leased(store)
    assert await store.get_lease_and_step("r1", "a") == (lease, None)
    error = {"type": "Overloaded", "message": "shed", "attrs": {"limit": 3}}
    degraded = step(
        "r1",
        "a",
        {"x": [1.5, "é"]},
        status="degraded",
        attempts=3,
        error=error,
        degraded_reason="x",
    )
    assert await store.commit_step(lease, degraded)
    committed = (await store.get_steps("r1"))["a"]
    assert await store.get_lease_and_step("r1", "a") == (lease, committed)
    assert await store.get_lease_and_step("r1", "b") == (lease, None)
    renewed = await store.renew_lease(lease, ttl=60)
    assert await store.get_lease_and_step("r1", "a") == (renewed, committed)
    await store.release_lease(renewed)
    assert await store.get_lease_and_step("r1", "a") == (None, committed)
    second = await store.acquire_lease("r1", "orch-2", ttl=30)
    assert await store.get_lease_and_step("r1", "b") == (second, None)
    wall.advance(31)  # expired: a rival takes the run over with a newer token
    third = await store.acquire_lease("r1", "orch-3", ttl=30)
    assert third.token == second.token + 1
    assert await store.get_lease_and_step("r1", "a") == (third, committed)


CHECKS = (check_lease_and_step_agree_with_run_and_steps,)
