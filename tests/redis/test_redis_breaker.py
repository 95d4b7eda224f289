"""Circuit breakers shared through Redis: each transition against a real server, and
several processes sharing one breaker."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import redis
from firebreak.errors import CircuitOpenError, DeadlineExceeded
from firebreak.events import BreakerBackendChanged, BreakerStateChanged
from firebreak.resilience.breaker import BreakerRegistry, CircuitBreaker
from firebreak.resilience.breaker_state import BreakerPolicy
from firebreak.resilience.redis_breaker import (
    RedisBreakerState,
    RedisBreakerStore,
    redis_breakers,
)
from firebreak.resilience.timeout import DeadlineMark
from firebreak.testing import FakeClock, capture_events

FAST = BreakerPolicy(minimum_calls=4, failure_rate=0.5, open_duration=0.2, open_jitter=0.0)


async def ok() -> str:
    return "ok"


async def down() -> str:
    raise ConnectionError("service down")


@pytest.fixture
async def stores(redis_url: str, prefix: str) -> AsyncIterator[list[RedisBreakerStore]]:
    """Two stores on one prefix: two processes' views of the same breakers."""
    made = [RedisBreakerStore(redis_url, prefix=prefix) for _ in range(2)]
    yield made
    for store in made:  # first: closing sends what is buffered
        await store.aclose()
    client = aioredis.Redis.from_url(redis_url)
    keys = await client.keys(f"{prefix}:*")
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def swept(redis_url: str, prefix: str) -> AsyncIterator[str]:
    """This test's prefix; its keys are deleted once the test (and its stores) ended."""
    yield prefix
    client = aioredis.Redis.from_url(redis_url)
    keys = await client.keys(f"{prefix}:*")
    if keys:
        await client.delete(*keys)
    await client.aclose()


def shared(store: RedisBreakerStore, policy: BreakerPolicy = FAST) -> CircuitBreaker:
    return BreakerRegistry(policy=policy, store=store).get("svc")


async def fail(br: CircuitBreaker, n: int) -> None:
    for _ in range(n):
        with pytest.raises(ConnectionError):
            await br.call(down)


async def test_a_healthy_closed_breaker_costs_no_round_trip_per_call(
    stores: list[RedisBreakerStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    br = shared(stores[0])
    trips = 0
    real = RedisBreakerState._run

    async def counted(self: RedisBreakerState, op: str, **kw: object) -> object:
        nonlocal trips
        trips += 1
        return await real(self, op, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(RedisBreakerState, "_run", counted)
    start = time.monotonic()
    for _ in range(1000):
        assert await br.call(ok) == "ok"
    elapsed = time.monotonic() - start
    # one state read per cache interval and one flush per flush interval, at most
    assert trips <= 2 + 2 * int(elapsed / 0.15 + 1)
    assert trips < 20


async def test_a_burst_beyond_the_connection_pool_waits_and_stays_shared(
    redis_url: str, swept: str
) -> None:
    """A cold cache under a burst: every call needs Redis at once. A full pool is not an
    unreachable Redis: nobody falls back to a local breaker."""
    async with RedisBreakerStore(redis_url, prefix=swept, max_connections=4) as store:
        br = shared(store)
        with capture_events() as seen:
            assert await asyncio.gather(*(br.call(ok) for _ in range(300))) == ["ok"] * 300
        assert br._state.backend == "redis"  # type: ignore[attr-defined]
        assert not [e for e in seen if isinstance(e, BreakerBackendChanged)]


async def test_a_round_trip_to_redis_never_outlasts_the_callers_deadline(
    redis_url: str, swept: str
) -> None:
    """A total timeout publishes its deadline without a timer (`DeadlineMark`): the
    breaker's own Redis calls are cut to the time left, and running out of it is the
    caller's `DeadlineExceeded`, not Redis being down (no fall back to a local breaker)."""
    clock = FakeClock()
    async with RedisBreakerStore(redis_url, prefix=swept, clock=clock) as store:
        br = BreakerRegistry(policy=FAST, store=store, clock=clock).get("svc")

        async def late() -> str:
            await clock.sleep(1.0)  # the deadline passes before the breaker is asked
            return await br.call(ok)

        with capture_events() as seen, pytest.raises(DeadlineExceeded):
            await DeadlineMark(0.5, clock=clock).call(late)
        assert br._state.backend == "redis"  # type: ignore[attr-defined]
        assert not [e for e in seen if isinstance(e, BreakerBackendChanged)]
        assert await br.call(ok) == "ok"  # outside the deadline: as usual
    await clock.aclose()


RATE = BreakerPolicy(minimum_calls=20, failure_rate=0.5, open_duration=5, open_jitter=0.0)


@pytest.mark.parametrize("how", ["timer", "aclose"])
async def test_buffered_successes_reach_the_others_without_another_call(
    redis_url: str, swept: str, how: str
) -> None:
    """30 successes here, then 20 failures elsewhere: 40 %, under the 50 % that trips. Had
    the successes stayed in this process's buffer, the other would see 100 % and trip."""
    flush_every = 0.05 if how == "timer" else 60.0
    quiet = RedisBreakerStore(redis_url, prefix=swept, flush_every=flush_every)
    other = RedisBreakerStore(redis_url, prefix=swept)
    try:
        calm = shared(quiet, RATE)
        for _ in range(30):
            await calm.call(ok)
        if how == "timer":
            await asyncio.sleep(0.3)  # the process stays alive and idle, no further call
        else:
            await quiet.aclose()  # the process exits
        busy = shared(other, RATE)
        await fail(busy, 20)
        assert busy.state == "closed"
    finally:
        await quiet.aclose()
        await other.aclose()


async def test_failures_from_two_processes_trip_one_breaker(
    stores: list[RedisBreakerStore],
) -> None:
    a, b = shared(stores[0]), shared(stores[1])
    await a.call(ok)
    await b.call(ok)
    await a._state.flush()  # type: ignore[attr-defined]
    await b._state.flush()  # type: ignore[attr-defined]
    await fail(a, 1)
    with capture_events() as seen:
        await fail(b, 1)  # 2 failures of 4 calls, counted across both
    assert b.state == "open"
    change = next(e for e in seen if isinstance(e, BreakerStateChanged))
    assert (change.old, change.new, change.open_for) == ("closed", "open", 0.2)
    assert "failure rate" in change.reason
    await fail(a, 1)  # a's cache (under 0.5 s old) said closed; its failure's reply: open
    with pytest.raises(CircuitOpenError) as rejected:
        await a.call(ok)
    assert rejected.value.retry_after is not None
    assert 0 < rejected.value.retry_after <= 0.2


async def test_after_the_open_time_probes_decide(stores: list[RedisBreakerStore]) -> None:
    policy = BreakerPolicy(minimum_calls=1, open_duration=0.2, open_jitter=0.0, half_open_probes=1)
    a, b = shared(stores[0], policy), shared(stores[1], policy)
    await fail(a, 1)
    await asyncio.sleep(0.25)
    with capture_events() as seen:
        async with a:  # a holds the one probe
            with pytest.raises(CircuitOpenError):
                await b.call(ok)
            assert b.state == "half_open"
    made = [
        (e.old, e.new)
        for e in seen
        if isinstance(e, BreakerStateChanged) and e.reason != "changed by another process"
    ]
    assert made == [("open", "half_open"), ("half_open", "closed")]
    assert a.state == "closed"
    await asyncio.sleep(0.55)  # b's cached state ages out
    assert await b.call(ok) == "ok"
    assert b.state == "closed"


async def test_a_process_says_when_another_one_moved_the_breaker(
    stores: list[RedisBreakerStore],
) -> None:
    """Its subscribers (`firebreak_circuit_state` of its /metrics) must not keep the state
    it last made: open for good, once another process's probe closed the breaker."""
    policy = BreakerPolicy(minimum_calls=1, open_duration=0.2, open_jitter=0.0)
    a, b = shared(stores[0], policy), shared(stores[1], policy)
    await fail(a, 1)  # a made it open
    await asyncio.sleep(0.25)
    assert await b.call(ok) == "ok"  # b's probe closes it
    with capture_events() as seen:
        assert await a.call(ok) == "ok"
    [change] = [e for e in seen if isinstance(e, BreakerStateChanged)]
    assert (change.source, change.old, change.new) == ("svc", "open", "closed")
    assert change.reason == "changed by another process"


async def test_a_failed_probe_reopens_for_longer(stores: list[RedisBreakerStore]) -> None:
    policy = BreakerPolicy(minimum_calls=1, open_duration=0.2, open_jitter=0.0)
    br = shared(stores[0], policy)
    await fail(br, 1)
    await asyncio.sleep(0.25)
    with capture_events() as seen:
        await fail(br, 1)  # the probe
    reopened = [e for e in seen if isinstance(e, BreakerStateChanged) and e.new == "open"]
    assert [(e.reason, e.open_for) for e in reopened] == [("probe failed", 0.4)]


async def test_a_probe_that_never_reports_frees_its_slot(
    stores: list[RedisBreakerStore],
) -> None:
    policy = BreakerPolicy(minimum_calls=1, open_duration=0.1, open_jitter=0.0, probe_lease=0.2)
    a, b = shared(stores[0], policy), shared(stores[1], policy)
    await fail(a, 1)
    await asyncio.sleep(0.15)
    lost = await a._state.acquire()  # admitted, then never reported
    assert lost > 0
    with pytest.raises(CircuitOpenError) as busy:
        await b.call(ok)
    assert busy.value.retry_after is not None
    assert 0 < busy.value.retry_after <= 0.2
    await asyncio.sleep(0.25)
    assert await b.call(ok) == "ok"
    await a._state.record(lost, failed=True, slow=False, retry_after=None)
    assert b.state == "closed"  # a late verdict of an expired probe changes nothing


async def test_a_probe_lease_in_redis_follows_the_attempt_timeout(
    redis_url: str, stores: list[RedisBreakerStore], prefix: str
) -> None:
    """The lease key a probe takes lives for the callers' attempt timeout and a second,
    not a fixed 30 s: a probe lost with its process frees the breaker that soon."""
    policy = BreakerPolicy(minimum_calls=1, open_duration=0.1, open_jitter=0.0)
    br = shared(stores[0], policy)
    br.expect_attempts(4)
    await fail(br, 1)
    await asyncio.sleep(0.15)
    assert await br._state.acquire() > 0  # type: ignore[attr-defined]  # a probe, lost
    client = aioredis.Redis.from_url(redis_url)
    [key] = await client.keys(f"{prefix}:breaker:svc:p:*")
    assert 4000 < await client.pttl(key) <= 5000
    await client.aclose()


async def test_release_frees_a_probe_slot(stores: list[RedisBreakerStore]) -> None:
    policy = BreakerPolicy(minimum_calls=1, open_duration=0.1, open_jitter=0.0)
    a, b = shared(stores[0], policy), shared(stores[1], policy)
    await fail(a, 1)
    await asyncio.sleep(0.15)
    with pytest.raises(asyncio.CancelledError):
        async with a:
            raise asyncio.CancelledError  # no verdict: the slot is released
    assert await b.call(ok) == "ok"


async def test_consecutive_failures_mode(stores: list[RedisBreakerStore]) -> None:
    policy = BreakerPolicy(consecutive_failures=3, open_duration=1.0, open_jitter=0.0)
    a, b = shared(stores[0], policy), shared(stores[1], policy)
    await fail(a, 2)
    await b.call(ok)
    await b._state.flush()  # type: ignore[attr-defined]  # resets the run
    await fail(a, 2)
    assert a.state == "closed"
    await fail(b, 1)
    assert b.state == "open"


async def test_unreachable_redis_falls_back_to_a_local_breaker() -> None:
    async with RedisBreakerStore("redis://127.0.0.1:1/0", retry_redis_after=60) as store:
        br = shared(store, BreakerPolicy(minimum_calls=2, open_jitter=0.0))
        with capture_events() as seen:
            assert await br.call(ok) == "ok"
            await fail(br, 1)  # 1 of 2 calls: the local breaker opens
            with pytest.raises(CircuitOpenError):
                await br.call(ok)
        fallback = [e for e in seen if isinstance(e, BreakerBackendChanged)]
        assert [(e.backend, e.source) for e in fallback] == [("local", "svc")]
        assert "redis unreachable" in fallback[0].reason
        assert br._state.backend == "local"  # type: ignore[attr-defined]


async def test_redis_breakers_builds_a_shared_registry(redis_url: str, prefix: str) -> None:
    registry = redis_breakers(redis_url, prefix=prefix, policy=FAST)
    br = registry.get("svc")
    assert isinstance(br._state, RedisBreakerState)
    await br._state._store.aclose()


@pytest.mark.slow
def test_processes_share_one_breaker_and_probe_exactly_as_configured(
    redis_url: str, prefix: str
) -> None:
    """Four processes trip one breaker; after recovery exactly 2 probes reach the service."""
    client = redis.Redis.from_url(redis_url)
    worker = Path(__file__).with_name("breaker_worker.py")
    procs = [
        subprocess.Popen(  # noqa: S603  -- our own script, our own interpreter
            [sys.executable, str(worker), redis_url, prefix],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "tripped"
        assert client.hget(f"{prefix}:breaker:svc", "state") == b"open"
        client.set(f"{prefix}:svc:healthy", "1")
        before = int(client.get(f"{prefix}:svc:calls") or 0)
        seconds, micros = client.time()
        open_until = int(client.hget(f"{prefix}:breaker:svc", "open_until") or 0)
        left = open_until / 1000 - (seconds + micros / 1e6)
        at = time.time() + max(left, 0) + 0.2
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{at}\n")
            p.stdin.flush()
        probes = []
        for p in procs:
            assert p.stdout is not None
            probes.append(p.stdout.readline().split()[1])
        after = int(client.get(f"{prefix}:svc:calls") or 0)
        assert sorted(probes) == ["ok", "ok", "rejected", "rejected"]
        assert after - before == 2  # exactly the configured probes reached the service
        assert client.hget(f"{prefix}:breaker:svc", "state") == b"closed"
        time.sleep(0.6)  # every process's cached state ages out
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        for p in procs:
            out, _ = p.communicate(timeout=20)
            assert out.strip() == "after " + ",".join(["ok"] * 5)
            assert p.returncode == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            for pipe in (p.stdin, p.stdout):
                if pipe is not None:
                    pipe.close()
        keys = client.keys(f"{prefix}:*")
        if keys:
            client.delete(*keys)
        client.close()
