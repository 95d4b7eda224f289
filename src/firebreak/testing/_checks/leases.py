"""Contract checks: leases, their expiry, and fencing tokens refusing stale owners."""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

from datetime import timedelta

from firebreak.errors import LeaseHeld, StaleLease, StoreError
from firebreak.testing._harness import ConformanceEnv, leased, raises, step


async def check_lease_is_exclusive_until_it_expires(env: ConformanceEnv) -> None:
    """A held lease refuses others (`LeaseHeld`) until its expiry instant, then moves on."""
    store, wall = env.store, env.wall
    await store.create_run("r1", "wf", None)
    first = await store.acquire_lease("r1", "orch-1", ttl=30)
    assert (first.owner, first.token, first.expires_at) == ("orch-1", 1, wall.wall() + 30)
    with raises(LeaseHeld) as held:
        await store.acquire_lease("r1", "orch-2", ttl=30)
    assert (held.value.owner, held.value.expires_at) == ("orch-1", first.expires_at)
    wall.advance(30)  # expiry is exclusive of its instant: now == expires_at means expired
    second = await store.acquire_lease("r1", "orch-2", ttl=30)
    assert second.token == 2
    run = await store.get_run("r1")
    assert run is not None
    assert (run.lease_owner, run.lease_token, run.lease_expires) == ("orch-2", 2, second.expires_at)


async def check_same_owner_reacquires_with_a_new_token(env: ConformanceEnv) -> None:
    """The holder may re-enter at once, but with a new token: the old driver is fenced."""
    store, wall = env.store, env.wall
    first = await leased(store)
    wall.advance(10)
    again = await store.acquire_lease("r1", "orch-1", ttl=30)
    assert again.token == first.token + 1
    assert again.expires_at == wall.wall() + 30
    with raises(StaleLease):
        await store.commit_step(first, step("r1", "a", 1))
    assert await store.commit_step(again, step("r1", "a", 2))
    wall.advance(31)  # expired: a new token again
    assert (await store.acquire_lease("r1", "orch-1", ttl=30)).token == first.token + 2


async def check_stale_owner_commit_is_refused(env: ConformanceEnv) -> None:
    """Once another owner took the run, the old lease's writes raise `StaleLease`."""
    store, wall = env.store, env.wall
    old = await leased(store)
    wall.advance(31)
    new = await store.acquire_lease("r1", "orch-2", ttl=30)
    with raises(StaleLease) as stale:
        await store.commit_step(old, step("r1", "a", 1))
    assert (stale.value.run_id, stale.value.token) == ("r1", old.token)
    with raises(StaleLease):
        await store.set_run_status(old, "succeeded")
    with raises(StaleLease):
        await store.renew_lease(old, ttl=30)
    assert await store.get_steps("r1") == {}
    assert await store.commit_step(new, step("r1", "a", 2))


async def check_expired_lease_nobody_took_still_writes(env: ConformanceEnv) -> None:
    """The token fences writers, not the clock: a slow, unchallenged owner loses nothing."""
    store, wall = env.store, env.wall
    lease = await leased(store)
    wall.advance(100)
    assert await store.commit_step(lease, step("r1", "a"))
    renewed = await store.renew_lease(lease, ttl=30)
    assert (renewed.token, renewed.expires_at) == (lease.token, wall.wall() + 30)


async def check_release_frees_the_run_and_bumps_the_next_token(env: ConformanceEnv) -> None:
    """A released lease no longer writes; the next holder gets a new token."""
    store = env.store
    lease = await leased(store)
    await store.release_lease(lease)
    run = await store.get_run("r1")
    assert run is not None
    assert (run.lease_owner, run.lease_expires, run.lease_token) == (None, None, 1)
    with raises(StaleLease):
        await store.commit_step(lease, step("r1", "a"))
    other = await store.acquire_lease("r1", "orch-2", ttl=5)
    assert other.token == 2
    await store.release_lease(lease)  # a lost lease: releasing it is a no-op
    run = await store.get_run("r1")
    assert run is not None
    assert run.lease_owner == "orch-2"


async def check_lease_on_unknown_run_raises_key_error(env: ConformanceEnv) -> None:
    """A lease on a run that does not exist raises `KeyError`."""
    with raises(KeyError):
        await env.store.acquire_lease("ghost", "o", ttl=1)


async def check_ttl_must_be_positive(env: ConformanceEnv) -> None:
    """A zero lease duration raises `ValueError` naming ``ttl``."""
    await env.store.create_run("r1", "wf", None)
    with raises(ValueError, match="ttl"):
        await env.store.acquire_lease("r1", "o", ttl=0)


async def check_update_step_is_fenced(env: ConformanceEnv) -> None:
    """A step update under a lease another owner took is refused."""
    store, wall = env.store, env.wall
    old = await leased(store)
    await store.commit_step(old, step("r1", "a"))
    wall.advance(31)
    await store.acquire_lease("r1", "orch-2", ttl=timedelta(seconds=30))
    with raises(StoreError):  # StaleLease
        await store.update_step(old, "r1", "a", status="compensated")


CHECKS = (
    check_lease_is_exclusive_until_it_expires,
    check_same_owner_reacquires_with_a_new_token,
    check_stale_owner_commit_is_refused,
    check_expired_lease_nobody_took_still_writes,
    check_release_frees_the_run_and_bumps_the_next_token,
    check_lease_on_unknown_run_raises_key_error,
    check_ttl_must_be_positive,
    check_update_step_is_fenced,
)
