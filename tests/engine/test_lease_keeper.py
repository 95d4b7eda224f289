"""A run keeps its lease for as long as it is driven, however long that is."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from engine_helpers import BACKENDS, opened

import firebreak as fb
from firebreak.store import RunStatus
from firebreak.testing import FakeClock

pytestmark = pytest.mark.parametrize("kind", BACKENDS)


async def _renewed(store: fb.CheckpointStore, run_id: str, clock: FakeClock) -> float:
    """Wait (real time: the store may write in a thread) until the lease outlives now + 5 s."""
    for _ in range(500):
        record = await store.get_run(run_id)
        expires = None if record is None else record.lease_expires
        if expires is not None and expires > clock.wall() + 5:
            return expires
        await asyncio.sleep(0.005)
    raise AssertionError(f"the lease of {run_id} was not renewed by {clock.now()}")


async def test_a_run_longer_than_its_lease_keeps_it(kind: str, tmp_path: Path) -> None:
    clock = FakeClock(autojump=False)  # moved by hand: renewals are real store writes
    wf = fb.Workflow("long")
    go = asyncio.Event()

    @wf.agent(timeout=120)
    async def slow(ctx: fb.Context, x: int) -> int:
        await go.wait()
        return x

    async with opened(kind, tmp_path, clock=clock.wall) as store:
        engine = fb.Engine(store, owner="first", lease_ttl=10, clock=clock)
        run = asyncio.create_task(engine.run(wf, 7, run_id="r1"))
        expiries = [await _renewed(store, "r1", clock)]  # the first lease
        for _ in range(15):  # 51 s: five lease lifetimes, a renewal every 3.4 s
            await asyncio.sleep(0)
            clock.advance(3.4)
            expiries.append(await _renewed(store, "r1", clock))
        assert expiries == sorted(expiries)
        assert expiries[-1] > clock.wall()
        with pytest.raises(fb.LeaseHeld):
            await store.acquire_lease("r1", "second", 10)
        go.set()
        result = await run
        assert result.status == RunStatus.SUCCEEDED
        assert result["slow"] == 7
        record = await store.get_run("r1")
        assert record is not None
        assert record.lease_owner is None  # given up at the end


async def test_a_run_that_never_waits_leaves_no_renewal_behind(kind: str, tmp_path: Path) -> None:
    clock = FakeClock(autojump=False)
    wf = fb.Workflow("quick")

    @wf.agent
    async def fast(ctx: fb.Context, x: int) -> int:
        return x + 1

    async with opened(kind, tmp_path, clock=clock.wall) as store:
        engine = fb.Engine(store, lease_ttl=10, clock=clock)
        result = await engine.run(wf, 1, run_id="r1")
        assert result["fast"] == 2
        clock.advance(60)  # a renewal left armed would run now, on a finished run
        await asyncio.sleep(0)
        record = await store.get_run("r1")
        assert record is not None
        assert record.status == RunStatus.SUCCEEDED
        assert record.lease_owner is None
