"""Timeouts, deadlines and breakers inside runs, on virtual time (no real waiting)."""

from __future__ import annotations

import random

import firebreak as fb
from firebreak.store import MemoryStore, RunStatus
from firebreak.testing import FakeClock


async def test_a_hung_agent_times_out_and_degrades_without_hanging_the_run() -> None:
    clock = FakeClock()
    wf = fb.Workflow("hang")

    @wf.agent
    async def extract(ctx: fb.Context, x: int) -> int:
        return x

    @wf.agent(after=[extract], timeout=10, critical=False, default=0)
    async def enrich(ctx: fb.Context, extract: int) -> int:
        await clock.sleep(3600)
        return 1

    async with MemoryStore() as store:
        result = await fb.Engine(store, clock=clock).run(wf, 1)
    assert result.status == RunStatus.DEGRADED
    assert result["enrich"] == 0
    assert "StepTimeout" in result.missing["enrich"]
    assert clock.now() == 10


async def test_retries_never_run_past_the_run_deadline() -> None:
    clock = FakeClock()
    wf = fb.Workflow("deadline", deadline=30)
    attempts: list[float] = []

    @wf.agent(timeout=20, retry=fb.Retry(attempts=10, base=1, cap=2, rng=random.Random(1)))
    async def slow(ctx: fb.Context, x: int) -> int:
        attempts.append(clock.now())
        await clock.sleep(3600)
        return x

    async with MemoryStore() as store:
        result = await fb.Engine(store, clock=clock).run(wf, 1)
    assert result.status == RunStatus.FAILED
    assert clock.now() <= 30
    assert len(attempts) == 2  # 20 s, a short backoff, then cut at the 30 s deadline
    assert result.error is not None
    assert "DeadlineExceeded" in result.error["type"]


async def test_an_open_breaker_pauses_until_it_lets_a_probe_through() -> None:
    clock = FakeClock()
    registry = fb.BreakerRegistry(
        clock=clock,
        policy=fb.BreakerPolicy(consecutive_failures=2, open_duration=30, open_jitter=0),
    )
    wf = fb.Workflow("breaker")
    calls: list[str] = []

    @wf.agent(breaker="ocr-api", on_exhausted="pause")
    async def ocr(ctx: fb.Context, scan: str) -> str:
        calls.append(ctx.run_id)
        raise ConnectionError("OCR down")

    async with MemoryStore(clock=clock.wall) as store:
        engine = fb.Engine(store, clock=clock, registry=registry)
        results = [await engine.run(wf, "scan", run_id=f"r{i}") for i in range(5)]
    assert [r.status for r in results] == [RunStatus.PAUSED] * 5
    assert calls == ["r0", "r1"]  # the breaker opened after two; the rest were not called
    assert results[4].resume_at is not None
    assert 29 <= results[4].resume_at - clock.wall() <= 30  # resume when a probe may pass
