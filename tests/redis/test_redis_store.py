"""What only `RedisStore` does: URLs, schema check, persistence warning, TTLs, errors."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import redis.asyncio as aioredis
from store_helpers import leased, step

from firebreak.errors import LeaseHeld, StaleLease, StoreCorrupt, StoreError
from firebreak.store import RunStatus, SupportsCommitThen, open_store
from firebreak.store import redis as redis_module
from firebreak.store.redis import SCHEMA_VERSION, RedisStore, from_url
from firebreak.testing import FakeClock

MakeStore = Callable[..., RedisStore]


def test_open_store_routes_redis_urls_with_options() -> None:
    store = open_store("redis://h:6380/3?prefix=billing&finished_ttl=60&socket_timeout=2")
    assert isinstance(store, RedisStore)
    assert (store.prefix, store.where, store.url) == (
        "billing",
        "h:6380/3",
        "redis://h:6380/3?socket_timeout=2",
    )
    assert store._finished_ms == "60000"
    never = from_url("rediss://h/0?finished_ttl=none", clock=time.time)
    assert never._finished_ms == ""
    with pytest.raises(ValueError, match="finished_ttl"):
        from_url("redis://h?finished_ttl=soon", clock=time.time)
    # Refused as the URL is read, not by a TypeError deep in the first connect (exit 1),
    # and without the password.
    with pytest.raises(ValueError, match=r"bogus=1': an option redis-py does not know") as err:
        open_store("redis://:s3cret@h/0?bogus=1")
    assert "s3cret" not in str(err.value)
    assert "redis://:***@h/0" in str(err.value)


async def test_nothing_connects_before_setup() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError, match="not open"):
        await store.get_run("r1")


async def test_a_server_that_is_down_is_one_clear_line() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StoreError) as err:
        await store.setup()
    message = str(err.value)
    assert "127.0.0.1:1/0" in message
    assert "\n" not in message
    assert err.value.__cause__ is None
    await store.close()


async def test_a_newer_schema_is_refused(redis_url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        await client.set(f"{prefix}:schema", str(SCHEMA_VERSION + 1))
        with pytest.raises(StoreCorrupt, match="newer firebreak"):
            await RedisStore(redis_url, prefix=prefix).setup()
        await client.set(f"{prefix}:schema", "not-a-version")
        with pytest.raises(StoreCorrupt, match="another prefix"):
            await RedisStore(redis_url, prefix=prefix).setup()
    finally:
        await client.delete(f"{prefix}:schema")
        await client.aclose()


async def test_a_schema_1_prefix_is_upgraded_in_place(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review items written before the per-run index are found by run after the upgrade."""
    monkeypatch.setattr(redis_module, "_UPGRADE_CHUNK", 2)  # three items: two script calls
    async with make_store() as store:
        prefix = store.prefix
        try:
            ids = [
                await store.review_put(run_id=run, workflow="wf", agent=agent, reason="?")
                for run, agent in (("r1", "a"), ("r2", "a"), ("r1", "b"))
            ]
            client = store._need()
            # Back to schema 1: no per-run index, the version mark 1.
            await client.delete(f"{prefix}:rv:run:r1", f"{prefix}:rv:run:r2")
            await client.set(f"{prefix}:schema", "1")
            async with make_store() as upgraded:
                assert [i.id for i in await upgraded.review_of_run("r1")] == [ids[0], ids[2]]
                assert [i.id for i in await upgraded.review_of_run("r2")] == [ids[1]]
                assert int(await client.get(f"{prefix}:schema")) == SCHEMA_VERSION == 2
        finally:
            await store.destroy()


async def test_an_item_written_by_an_older_process_is_found_once_resolved(
    make_store: MakeStore,
) -> None:
    """A rolling deploy: a schema-1 process still writes items without the per-run index."""
    async with make_store() as store:
        try:
            item = await store.review_put(run_id="r1", workflow="wf", agent="a", reason="?")
            await store._need().delete(f"{store.prefix}:rv:run:r1")  # as schema 1 wrote it
            assert await store.review_of_run("r1") == []
            await store.review_resolve(item, {"po": "PO-1"})
            [found] = await store.review_of_run("r1")
            assert (found.id, found.status, found.value) == (item, "resolved", {"po": "PO-1"})
        finally:
            await store.destroy()


async def test_warns_once_when_the_server_persists_nothing(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_module, "_warned", set())
    client = aioredis.Redis.from_url(make_store().url, decode_responses=True)
    try:
        aof = (await client.config_get("appendonly"))["appendonly"]
        save = (await client.config_get("save"))["save"]
    finally:
        await client.aclose()
    persists = aof == "yes" or bool(save.strip())
    with caplog.at_level(logging.WARNING, logger="firebreak.store.redis"):
        for _ in range(2):
            async with make_store() as store:
                await store.destroy()
    warnings = [r for r in caplog.records if "persists nothing" in r.getMessage()]
    assert len(warnings) == (0 if persists else 1)


async def test_finished_runs_expire_failed_runs_stay(make_store: MakeStore) -> None:
    async with make_store(finished_ttl=0.3) as store:
        try:
            ok, bad = await leased(store, "ok"), await leased(store, "bad")
            await store.commit_step(ok, step("ok", "a", 1))
            await store.cas_state("ok", 0, {"k": 1})
            await store.set_run_status(ok, RunStatus.SUCCEEDED)
            await store.set_run_status(bad, RunStatus.FAILED)
            client = store._need()
            for key in ("run", "steps", "seqs", "state"):
                assert 0 < await client.pttl(f"{store.prefix}:{key}:ok") <= 300
            assert await client.pttl(f"{store.prefix}:run:bad") == -1
            await asyncio.sleep(0.4)
            assert await store.get_run("ok") is None
            # Its index entry outlives it until a write sweeps it: a short id skips it.
            assert await store.run_ids_starting("", limit=5) == ["bad"]
            assert await store.get_steps("ok") == {}
            assert [r.run_id for r in await store.list_runs()] == ["bad"]
            assert await store.list_runs(status="succeeded") == []
            await store.create_run("later", "wf", None)  # sweeps expired index entries
            assert await client.zscore(f"{store.prefix}:runs:w:wf", "ok") is None
            members = await client.zrange(f"{store.prefix}:runs:w:wf", 0, -1)
            assert [m[17:] for m in members] == ["bad", "later"]
        finally:
            await store.destroy()


async def test_listings_read_big_indexes_page_by_page(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No script reads a whole index: pages of `_COLLECT_PAGE`, each record listed once."""
    monkeypatch.setattr(redis_module, "_COLLECT_PAGE", 2)
    async with make_store() as store, make_store() as other:
        try:
            for i in range(7):
                await store.create_run(f"r{i}", "wf", i)
                await store.review_put(run_id=f"r{i}", workflow="wf", agent="a", reason="?")
            await store._need().delete(f"{store.prefix}:run:r3")  # as if it had expired
            newest = ["r6", "r5", "r4", "r2", "r1", "r0"]
            assert [r.run_id for r in await store.list_runs(limit=3)] == newest[:3]
            assert [r.run_id for r in await store.list_runs()] == newest
            assert [i.run_id for i in await store.review_list()] == [f"r{i}" for i in range(7)]
            # A run created between two pages shifts the rest down a rank: the record read
            # at the end of one page comes again at the start of the next, and is kept once.
            calls = 0
            plain_do = store._do

            async def do_then_create(op: Any) -> Any:
                nonlocal calls
                calls += 1
                result = await plain_do(op)
                if calls == 1:
                    await other.create_run("late", "wf", None)
                return result

            monkeypatch.setattr(store, "_do", do_then_create)
            assert [r.run_id for r in await store.list_runs()] == newest
            assert calls == 4  # r6 r5 | r5 r4 | (r3 dropped) r2 r1 | r0 and the end
        finally:
            await store.destroy()


async def test_a_listing_call_scans_a_bounded_number_of_expired_entries(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An index of mostly expired runs is cleaned over several calls, not in one long one."""
    monkeypatch.setattr(redis_module, "_COLLECT_PAGE", 2)  # a call scans up to 2 * 2 + 100
    async with make_store() as store:
        try:
            for i in range(130):
                await store.create_run(f"r{i:03}", "wf", i)
            client = store._need()
            await client.delete(*(f"{store.prefix}:run:r{i:03}" for i in range(3, 130)))
            calls = 0
            plain_do = store._do

            async def counted(op: Any) -> Any:
                nonlocal calls
                calls += 1
                return await plain_do(op)

            monkeypatch.setattr(store, "_do", counted)
            assert [r.run_id for r in await store.list_runs()] == ["r002", "r001", "r000"]
            assert calls == 3  # 104 expired dropped; 23 and r002 r001; r000 and the end
            assert await client.zcard(f"{store.prefix}:runs") == 3
        finally:
            await store.destroy()


async def test_a_run_finished_with_its_last_step_expires_too(make_store: MakeStore) -> None:
    """`commit_step_and_finish` applies the finished-run TTL as `finish_run` does."""
    async with make_store(finished_ttl=60) as store:
        try:
            lease = await leased(store, "ok")
            await store.commit_step(lease, step("ok", "a", 1))
            last = step("ok", "b", 2)
            result = {"outputs": {"a": 1, "b": 2}}
            assert await store.commit_step_and_finish(lease, last, "succeeded", result=result)
            client = store._need()
            for key in ("run", "steps", "seqs"):
                assert 0 < await client.pttl(f"{store.prefix}:{key}:ok") <= 60_000
            run = await store.get_run("ok")
            assert run is not None
            assert (run.status, run.result, run.lease_owner) == ("succeeded", result, None)
            assert [r.run_id for r in await store.list_runs(status="succeeded")] == ["ok"]
            assert await store.list_runs(status="running") == []
        finally:
            await store.destroy()


async def test_a_resumed_finished_run_stops_expiring(make_store: MakeStore) -> None:
    async with make_store(failed_ttl=60) as store:
        try:
            lease = await leased(store)
            await store.set_run_status(lease, RunStatus.FAILED)
            client = store._need()
            assert await client.pttl(f"{store.prefix}:run:r1") > 0
            await store.set_run_status(lease, RunStatus.PENDING)  # a replay
            assert await client.pttl(f"{store.prefix}:run:r1") == -1
            assert await client.zcard(f"{store.prefix}:expiring") == 0
        finally:
            await store.destroy()


async def test_destroy_removes_only_its_prefix(make_store: MakeStore, redis_url: str) -> None:
    async with RedisStore(redis_url, prefix="fbtest-neighbour") as other:
        await other.create_run("keep", "wf", None)
        async with make_store() as store:
            await leased(store)
            await store.dlq_put(run_id="r1", workflow="wf", reason="x")
            await store.destroy()
            assert await store._need().keys(f"{store.prefix}:*") == []
        assert await other.get_run("keep") is not None
        await other.destroy()


async def test_records_from_another_process_clock_keep_full_precision(
    store: RedisStore, wall: FakeClock
) -> None:
    wall.advance(0.123456789012345)
    run, _ = await store.create_run("r1", "wf", None)
    assert run.created_at == wall.wall()
    assert (await store.get_run("r1")) == run


async def test_a_step_commit_is_one_round_trip(store: RedisStore) -> None:
    """Measured, and printed with -s: a commit costs about one raw Redis round trip."""
    lease = await leased(store)
    client = store._need()
    n = 300
    start = time.perf_counter()
    for _ in range(n):
        await client.ping()
    ping = (time.perf_counter() - start) / n
    start = time.perf_counter()
    for i in range(n):
        await store.commit_step(lease, step("r1", f"a{i}", {"i": i}))
    commit = (time.perf_counter() - start) / n
    print(f"\nraw PING {ping * 1e6:.0f} us, commit_step {commit * 1e6:.0f} us")  # noqa: T201 - shown with -s
    assert commit < ping * 6 + 0.002


async def test_concurrent_begins_commits_and_finishes_share_one_script_call(
    store: RedisStore,
) -> None:
    """Hot writes of 50 runs at once leave as a few HOT_BATCH calls, each judged alone."""
    begun = await asyncio.gather(
        *(store.begin_run(f"r{i}", "wf", {"i": i}, owner="orch", ttl=30) for i in range(50))
    )
    leases = [lease for _, _, lease in begun if lease is not None]
    assert len(leases) == 50
    assert [run.input for run, _, _ in begun] == [{"i": i} for i in range(50)]
    pipeline = store._pipeline
    assert pipeline is not None
    before = pipeline.pipelines
    done = await asyncio.gather(
        *(store.commit_step(lease, step(lease.run_id, "a", "ü\x00\n")) for lease in leases),
        store.commit_step(leases[0], step("r0", "a", "duplicate")),
    )
    assert done == [True] * 50 + [False]
    assert pipeline.pipelines - before < 5  # the first alone, then the rest together
    assert (await store.get_steps("r3"))["a"].output == "ü\x00\n"
    finished = await asyncio.gather(
        *(store.finish_run(lease, "succeeded", result=lease.run_id) for lease in leases)
    )
    assert [(r.status, r.result, r.lease_owner) for r in finished] == [
        ("succeeded", f"r{i}", None) for i in range(50)
    ]


async def test_a_refused_hot_write_in_a_batch_is_its_callers_alone(store: RedisStore) -> None:
    """A held lease, a stale lease and an unknown run fail their callers, not the batch."""
    _, _, held = await store.begin_run("held", "wf", 0, owner="orch-1", ttl=30)
    _, _, mine = await store.begin_run("mine", "wf", 0, owner="orch-1", ttl=30)
    assert held is not None
    assert mine is not None
    outcomes = await asyncio.gather(
        store.begin_run("held", "wf", 0, owner="orch-2", ttl=30),
        store.begin_run("fresh", "wf", 0, owner="orch-2", ttl=30),
        store.commit_step(replace(mine, token=mine.token + 1), step("mine", "a")),
        store.finish_run(replace(mine, run_id="nobody"), "succeeded"),
        store.commit_step(mine, step("mine", "b", 2)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[0], LeaseHeld)
    assert not isinstance(outcomes[1], BaseException)
    assert outcomes[1][2] is not None
    assert isinstance(outcomes[2], StaleLease)
    assert isinstance(outcomes[3], KeyError)
    assert outcomes[4] is True


async def test_hot_writes_survive_a_script_flush(store: RedisStore) -> None:
    """After SCRIPT FLUSH (as after a restart) the batch script is loaded again and resent."""
    _, _, lease = await store.begin_run("r1", "wf", 0, owner="o", ttl=30)
    assert lease is not None
    await store._need().script_flush()
    done = await asyncio.gather(
        *(store.commit_step(lease, step("r1", f"a{i}", i)) for i in range(20))
    )
    assert all(done)
    await store._need().script_flush()
    run = await store.finish_run(lease, "succeeded", result=1)
    assert run.status == "succeeded"


async def test_concurrent_lease_and_step_checks_share_round_trips(store: RedisStore) -> None:
    """Workers' checks made at once leave as a few pipelines, each answered for its run."""
    leases = [await leased(store, f"r{i}") for i in range(40)]
    for lease in leases[::2]:
        assert await store.commit_step(lease, step(lease.run_id, "a", {"n": lease.run_id}))
    pipeline = store._pipeline
    assert pipeline is not None
    before = pipeline.pipelines
    checks = await asyncio.gather(*(store.get_lease_and_step(f"r{i}", "a") for i in range(40)))
    assert pipeline.pipelines - before < 5  # the first alone, then the rest together
    for i, (current, record) in enumerate(checks):
        assert current == leases[i]
        if i % 2:
            assert record is None
        else:
            assert record == (await store.get_steps(f"r{i}"))["a"]


async def test_lease_and_step_checks_survive_a_script_flush(store: RedisStore) -> None:
    """After SCRIPT FLUSH the check's script is loaded again, alone or in a pipeline."""
    lease = await leased(store)
    assert await store.commit_step(lease, step("r1", "a", 1))
    await store._need().script_flush()
    current, record = await store.get_lease_and_step("r1", "a")
    assert (current, record is not None) == (lease, True)
    await store._need().script_flush()
    checks = await asyncio.gather(*(store.get_lease_and_step("r1", a) for a in ("a", "b") * 10))
    assert [(c, r is None) for c, r in checks] == [(lease, False), (lease, True)] * 10


async def test_commit_step_then_runs_its_commands_only_after_a_first_commit(
    store: RedisStore,
) -> None:
    """The commands run in the commit's script when it is the first commit; never for a
    duplicate, a stale lease or an unknown run (`SupportsCommitThen`)."""
    assert isinstance(store, SupportsCommitThen)
    lease = await leased(store)
    client = store._need()
    key = f"{store.prefix}:then"

    def push(value: str) -> list[list[str]]:
        return [["RPUSH", key, value], ["RPUSH", key, value + "!"]]

    assert await store.commit_step_then(lease, step("r1", "a", 1), push("first"))
    assert not await store.commit_step_then(lease, step("r1", "a", 2), push("duplicate"))
    with pytest.raises(StaleLease):
        stale = replace(lease, token=lease.token + 1)
        await store.commit_step_then(stale, step("r1", "b", 3), push("stale"))
    with pytest.raises(KeyError):
        ghost = replace(lease, run_id="ghost")
        await store.commit_step_then(ghost, step("ghost", "a", 4), push("ghost"))
    together = await asyncio.gather(
        *(store.commit_step_then(lease, step("r1", f"c{i}", i), push(f"c{i}")) for i in range(5))
    )
    assert together == [True] * 5
    assert await client.lrange(key, 0, -1) == [
        "first", "first!", *(x for i in range(5) for x in (f"c{i}", f"c{i}!"))
    ]  # fmt: skip
    assert (await store.get_steps("r1"))["a"].output == 1


async def test_a_failing_command_after_a_commit_fails_the_call_and_keeps_the_commit(
    store: RedisStore,
) -> None:
    """A script is not rolled back: the commit stays, and its caller sees `StoreError`
    (a worker hands the task back; the redelivery finds the step committed)."""
    lease = await leased(store)
    await store._need().set(f"{store.prefix}:not-a-stream", "x")
    with pytest.raises(StoreError, match="WRONGTYPE"):
        bad = [["XADD", f"{store.prefix}:not-a-stream", "*", "b", "1"]]
        await store.commit_step_then(lease, step("r1", "a", 1), bad)
    assert (await store.get_steps("r1"))["a"].output == 1


def test_same_server_compares_host_port_database_and_user() -> None:
    store = RedisStore("redis://127.0.0.1:6379/15?socket_timeout=2")
    assert store.same_server("redis://127.0.0.1:6379/15?prefix=bus&visibility_timeout=5")
    assert store.same_server("redis://127.0.0.1/15")
    assert not store.same_server("redis://127.0.0.1:6379/14")
    assert not store.same_server("redis://localhost:6379/15")  # not proven the same
    assert not store.same_server("redis://127.0.0.1:6380/15")
    assert not store.same_server("redis://user@127.0.0.1:6379/15")
    assert not store.same_server("nats://127.0.0.1:6379/15")
    assert not store.same_server("redis://127.0.0.1:port/15")
