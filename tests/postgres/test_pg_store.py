"""PostgresStore beyond the shared contract: migrations, errors, group commit, audit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace

import psycopg
import pytest
from psycopg import sql

from firebreak.errors import LeaseHeld, StaleLease, StoreCorrupt, StoreError
from firebreak.store import CheckpointStore, StepRecord, StepStatus, open_store
from firebreak.store import _pg_schema as schema_mod
from firebreak.store.postgres import PostgresStore, from_url

Make = Callable[..., PostgresStore]


def step(run_id: str, agent: str, output: object = None) -> StepRecord:
    return StepRecord(run_id=run_id, agent=agent, status=StepStatus.SUCCEEDED, output=output)


async def test_store_satisfies_the_protocol(store: PostgresStore) -> None:
    assert isinstance(store, CheckpointStore)


async def test_setup_is_idempotent_versioned_and_close_too(make_store: Make, pg_url: str) -> None:
    store = make_store()
    await store.setup()
    await store.setup()
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT version FROM {}.schema_version ORDER BY version").format(
                sql.Identifier(store.schema)
            )
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, schema_mod.LATEST + 1))
    await store.close()
    await store.close()


async def test_use_before_setup_says_so(make_store: Make) -> None:
    with pytest.raises(StoreError, match="not open"):
        await make_store().get_run("r1")


async def test_concurrent_setups_apply_each_migration_once(make_store: Make) -> None:
    stores = [make_store() for _ in range(4)]
    await asyncio.gather(*(s.setup() for s in stores))
    run, created = await stores[0].create_run("r1", "wf", 1)
    assert created
    assert await stores[3].get_run("r1") == run


async def test_a_schema_from_a_newer_firebreak_is_refused(make_store: Make, pg_url: str) -> None:
    async with make_store() as store:
        pass
    newer = schema_mod.LATEST + 1
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("INSERT INTO {}.schema_version (version) VALUES (%s)").format(
                sql.Identifier(store.schema)
            ),
            (newer,),
        )
    with pytest.raises(StoreCorrupt) as refused:
        await make_store().setup()
    message = str(refused.value)
    assert f"newer firebreak (schema {newer} > {schema_mod.LATEST})" in message
    assert "\n" not in message


async def test_a_foreign_schema_is_refused_untouched(make_store: Make, pg_url: str) -> None:
    store = make_store()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(store.schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {}.invoices (id int)").format(sql.Identifier(store.schema))
        )
    with pytest.raises(StoreCorrupt, match="did not create"):
        await store.setup()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:1/postgres", "127.0.0.1:1/postgres"),
        ("postgresql://postgres@127.0.0.1:5432/no_such_db_fb", "no_such_db_fb"),
        ("postgresql://no_such_role_fb@127.0.0.1:5432/postgres", "no_such_role_fb"),
    ],
    ids=["server-down", "unknown-database", "unknown-role"],
)
async def test_connection_problems_are_one_clear_line(pg_url: str, url: str, expected: str) -> None:
    store = PostgresStore(url, schema="fb_never_created", timeout=2)
    with pytest.raises(StoreError) as failed:
        await store.setup()
    message = str(failed.value)
    assert message.startswith("postgres 127.0.0.1:")
    assert expected in message
    assert "\n" not in message
    await store.close()


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="schema"):
        PostgresStore("postgresql://h/db", schema="Bad-Name")
    with pytest.raises(ValueError, match="pool_size"):
        PostgresStore("postgresql://h/db", pool_size=0)


def test_urls_route_here_and_the_schema_option_is_stripped() -> None:
    store = open_store("postgres://app@db.example:6543/ops?schema=billing&sslmode=disable")
    assert isinstance(store, PostgresStore)
    assert store.schema == "billing"
    assert store.where == "postgres db.example:6543/ops"
    assert "schema=" not in store._conninfo
    assert "sslmode=disable" in store._conninfo
    assert from_url("postgresql://h/db", clock=lambda: 0.0).schema == "firebreak"
    assert "password" not in repr(from_url("postgresql://u:secret@h/db", clock=lambda: 0.0))


async def test_concurrent_commits_share_transactions(make_store: Make) -> None:
    async with make_store() as store:
        leases = []
        for i in range(50):
            await store.create_run(f"r{i}", "wf", i)
            leases.append(await store.acquire_lease(f"r{i}", "orch", ttl=30))
        results = await asyncio.gather(
            *(store.commit_step(lease, step(lease.run_id, "a", 1)) for lease in leases)
        )
        assert all(results)
        committer = store._committer
        assert committer is not None
        assert committer.commits == 50
        assert committer.batches < 50  # grouped; typically 2 (the first alone, then the rest)


async def test_a_refused_commit_in_a_batch_does_not_undo_the_others(
    make_store: Make, wall: object
) -> None:
    async with make_store() as store:
        await store.create_run("old", "wf", 0)
        stale = await store.acquire_lease("old", "orch-1", ttl=1)
        await store.release_lease(stale)
        await store.acquire_lease("old", "orch-2", ttl=30)
        good = []
        for i in range(5):
            await store.create_run(f"r{i}", "wf", i)
            good.append(await store.acquire_lease(f"r{i}", "orch", ttl=30))
        outcomes = await asyncio.gather(
            store.commit_step(stale, step("old", "a")),
            *(store.commit_step(lease, step(lease.run_id, "a")) for lease in good),
            store.commit_step(good[0], step("r0", "a")),  # a duplicate in the same batch
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], StaleLease)
        assert outcomes[1:6] == [True] * 5
        assert outcomes[6] is False
        assert await store.get_steps("old") == {}


async def test_begins_commits_and_finishes_of_many_runs_share_one_statement(
    make_store: Make,
) -> None:
    """begin_run, commit_step and finish_run of 50 runs at once ride in a few batches."""
    async with make_store() as store:
        begun = await asyncio.gather(
            *(store.begin_run(f"r{i}", "wf", {"i": i}, owner="orch", ttl=30) for i in range(50))
        )
        leases = [lease for _, created, lease in begun if created and lease is not None]
        assert len(leases) == 50
        assert all(run.status == "running" for run, _, _ in begun)
        assert [run.input for run, _, _ in begun] == [{"i": i} for i in range(50)]
        done = await asyncio.gather(
            *(store.commit_step(lease, step(lease.run_id, "a", 1)) for lease in leases)
        )
        assert all(done)
        finished = await asyncio.gather(
            *(store.finish_run(lease, "succeeded", result=lease.run_id) for lease in leases)
        )
        assert [(r.status, r.result, r.lease_owner) for r in finished] == [
            ("succeeded", f"r{i}", None) for i in range(50)
        ]
        committer = store._committer
        assert committer is not None
        assert committer.commits == 150
        assert committer.batches < 30  # grouped: typically 2 per kind
        log = await store.audit_log("r7")
        assert [e["kind"] for e in log] == [
            "run_created",
            "lease_acquired",
            "run_status",
            "step_committed",
            "run_status",
            "lease_released",
        ]


async def test_a_run_driven_by_the_engine_finishes_with_its_last_commit(make_store: Make) -> None:
    """Migration 4: begin, one transaction per step, the last one with the finish; audited
    as a separate commit and finish would be."""
    import firebreak as fb  # noqa: PLC0415 - the engine, only here

    wf = fb.Workflow("chain")

    @wf.agent
    async def a(ctx: fb.Context, x: int) -> int:
        return x + 1

    @wf.agent(after=[a])
    async def b(ctx: fb.Context, a: int) -> int:
        return a + 1

    async with make_store() as store:
        committer = store._committer
        assert committer is not None
        before = committer.batches
        result = await fb.Engine(store).run(wf, 1, run_id="r1")
        assert result["b"] == 3
        assert committer.batches - before == 3  # begin, a, b with the finish
        run = await store.get_run("r1")
        assert run is not None
        assert (run.status, run.lease_owner) == ("succeeded", None)
        assert run.result == {"missing": {}, "reviews": [], "outputs": {"a": 2, "b": 3}}
        log = await store.audit_log("r1")
        assert [e["kind"] for e in log] == [
            "run_created",
            "lease_acquired",
            "run_status",
            "step_committed",
            "step_committed",
            "run_status",
            "lease_released",
        ]
        assert log[-2]["what"]["status"] == "succeeded"
        assert log[-1]["what"]["token"] == log[1]["what"]["token"]


async def test_a_refused_begin_or_finish_in_a_batch_does_not_undo_the_others(
    make_store: Make,
) -> None:
    """A held lease, a stale finish and an unknown run are each their caller's own error."""
    async with make_store() as store:
        _, _, held = await store.begin_run("held", "wf", 0, owner="orch-1", ttl=30)
        assert held is not None
        _, _, mine = await store.begin_run("mine", "wf", 0, owner="orch-1", ttl=30)
        assert mine is not None
        outcomes = await asyncio.gather(
            store.begin_run("held", "wf", 0, owner="orch-2", ttl=30),
            store.begin_run("fresh", "wf", 0, owner="orch-2", ttl=30),
            store.finish_run(replace(mine, token=mine.token + 1), "succeeded"),
            store.finish_run(replace(mine, run_id="nobody"), "succeeded"),
            store.finish_run(held, "failed", error={"message": "m"}),
            return_exceptions=True,
        )
        assert isinstance(outcomes[0], LeaseHeld)
        assert not isinstance(outcomes[1], BaseException)
        assert outcomes[1][1] is True
        assert isinstance(outcomes[2], StaleLease)
        assert isinstance(outcomes[3], KeyError)
        assert not isinstance(outcomes[4], BaseException)
        assert outcomes[4].status == "failed"
        assert outcomes[4].error == {"message": "m"}
        run = await store.get_run("mine")
        assert run is not None
        assert (run.status, run.lease_owner) == ("running", "orch-1")


async def test_finished_run_is_not_begun_again(make_store: Make) -> None:
    """begin_run of a finished run returns it as stored, with no lease (one statement)."""
    async with make_store() as store:
        _, _, lease = await store.begin_run("r1", "wf", 0, owner="o", ttl=30)
        assert lease is not None
        await store.finish_run(lease, "succeeded", result=42)
        run, created, again = await store.begin_run("r1", "wf", 0, owner="o", ttl=30)
        assert (run.status, run.result, created, again) == ("succeeded", 42, False, None)
        run, created, other = await store.begin_run("r1", "other-wf", 0, owner="o", ttl=30)
        assert (run.workflow, created, other) == ("wf", False, None)


async def test_group_commit_can_be_turned_off(make_store: Make) -> None:
    async with make_store(group_commit=False) as store:
        await store.create_run("r1", "wf", 0)
        lease = await store.acquire_lease("r1", "o", ttl=30)
        results = await asyncio.gather(
            *(store.commit_step(lease, step("r1", f"a{i}")) for i in range(10))
        )
        assert all(results)
        assert [s.seq for s in (await store.get_steps("r1")).values()] == list(range(1, 11))


async def test_every_transition_is_audited_with_who_when_what(
    make_store: Make, wall: object, pg_url: str
) -> None:
    async with make_store() as store:
        await store.create_run("r1", "wf", {"n": 1})
        lease = await store.acquire_lease("r1", "orch-1", ttl=30)
        lease = await store.renew_lease(lease, ttl=30)
        await store.commit_step(lease, step("r1", "a", 1))
        await store.commit_step(lease, step("r1", "a", 2))  # duplicate: no transition
        await store.update_step(lease, "r1", "a", status="compensated")
        await store.set_run_status(lease, "failed", error={"type": "X", "message": "m"})
        entry = await store.dlq_put(run_id="r1", workflow="wf", reason="boom")
        item = await store.review_put(run_id="r1", workflow="wf", agent="b", reason="?")
        await store.review_resolve(item, "yes")
        await store.dlq_drop(entry)
        await store.release_lease(lease)
        log = await store.audit_log("r1")
    kinds = [e["kind"] for e in log]
    assert kinds == [
        "run_created",
        "lease_acquired",
        "lease_renewed",
        "step_committed",
        "step_updated",
        "run_status",
        "dlq_put",
        "review_put",
        "review_resolved",
        "dlq_dropped",
        "lease_released",
    ]
    by_kind = {e["kind"]: e for e in log}
    assert by_kind["step_committed"]["actor"] == "orch-1"
    assert by_kind["step_committed"]["what"]["agent"] == "a"
    assert by_kind["step_updated"]["what"]["from"] == "succeeded"
    assert by_kind["run_status"]["what"]["status"] == "failed"
    assert all(e["at"] == store.clock() for e in log)
    assert all(e["client"].startswith("firebreak:") for e in log)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        table = sql.SQL("{}.audit").format(sql.Identifier(store.schema))
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(sql.SQL("UPDATE {} SET kind = 'x'").format(table))
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(sql.SQL("DELETE FROM {}").format(table))


async def test_an_error_text_with_a_nul_is_recorded_and_the_run_dead_lettered(
    store: PostgresStore,
) -> None:
    """PostgreSQL keeps no NUL in text or jsonb: an agent's error (bytes from a service)
    with one left the run "running" for good, never dead-lettered. It becomes U+FFFD."""
    import firebreak as fb  # noqa: PLC0415 - the engine over this store

    wf = fb.Workflow("nul")

    @wf.agent
    async def fetch(ctx: fb.Context, x: int) -> int:
        raise ValueError("binary junk \x00 in the reply")

    @wf.agent(critical=False, default=None)
    async def ask(ctx: fb.Context, x: int) -> int:
        raise fb.NeedsHuman("which \x00 one?", suggestions=["a\x00b"])

    engine = fb.Engine(store)
    result = await engine.run(wf, 1, run_id="r-nul")
    assert result.status == fb.RunStatus.FAILED
    entry = await store.dlq_of_run("r-nul")
    assert entry is not None
    assert entry.error is not None
    assert entry.error["message"] == "binary junk \ufffd in the reply"
    [item] = await store.review_of_run("r-nul")
    assert item.reason == "NeedsHuman: which \ufffd one?"
    assert item.suggestions == ["a\ufffdb"]
