"""Server stores: firebreak on Redis and PostgreSQL against LangGraph and DBOS, in one run.

The 10-step linear workflow of ``bench/workflow.py`` (no-op async agents), run one after
another and 50 at a time, by:

* firebreak on PostgreSQL (`PostgresStore`: begins, step commits and finishes of concurrent
  runs grouped into one statement and one transaction per batch, audit),
* firebreak on Redis (`RedisStore`: one Lua script per write; concurrent begins, commits and
  finishes in one script call),
* LangGraph with its ``AsyncPostgresSaver`` (on a psycopg pool, as its docs set it up),
* DBOS (durable workflows on Postgres; one ``@DBOS.step`` per step);

plus two floors, measured the same way: one autocommitted psycopg ``INSERT`` per step
(a row of 40 bytes, pool of `POOL` connections) and one Redis ``SET`` per step.

Each Postgres-backed system gets a database of its own (``fbbench_<hex>``, dropped at the
end); firebreak and the INSERT floor share one, in schemas of their own. Redis keys go under
prefixes of their own in the given DB and are deleted at the end.

Run: ``python bench/stores.py [--quick] [--profile SYSTEM]``. Needs the ``postgres`` and
``redis`` extras plus ``langgraph langgraph-checkpoint-postgres dbos``, a PostgreSQL
(``--postgres-url``, default ``$FIREBREAK_TEST_POSTGRES_URL`` or
``postgresql://postgres@127.0.0.1:5432/postgres``; the role must be allowed to create
databases) and a Redis (``--redis-url``, default ``$FIREBREAK_TEST_REDIS_URL`` or
``redis://127.0.0.1:6379/15``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import logging
import os
import platform
import pstats
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from importlib.metadata import version
from typing import Any, TypedDict
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis.asyncio as aioredis
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

import firebreak as fb
from firebreak.engine import Engine
from firebreak.store.postgres import PostgresStore
from firebreak.store.redis import RedisStore
from workflow import (
    CONCURRENCY,
    STEPS,
    Figure,
    Runner,
    _mark,
    chain_workflow,
    concurrent,
    noop,
    sequential,
)

POOL = 20
"""Connections of every client-side pool we size (the INSERT floor, LangGraph's saver)."""

FB_PG = "firebreak PostgreSQL"
FB_REDIS = "firebreak Redis"
LG_PG = "LangGraph AsyncPostgresSaver"
DBOS_PG = "DBOS (Postgres)"
RAW_INSERT = "floor: 1 INSERT/step (psycopg)"
RAW_SET = "floor: 1 SET/step (redis)"

Variant = AbstractAsyncContextManager[Runner]
TAG = uuid.uuid4().hex[:10]


# -- scratch databases --------------------------------------------------------------------


def with_db(url: str, dbname: str) -> str:
    """`url` pointing at database `dbname` instead."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


@asynccontextmanager
async def scratch_database(admin_url: str, name: str) -> AsyncIterator[str]:
    """Create database `name`, yield its URL, drop it (forcefully) at the end."""
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        await conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_db(admin_url, name)
    finally:
        async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
            await conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


# -- the systems ----------------------------------------------------------------------------


def _firebreak_runner(engine: Engine, tag: str) -> Runner:
    wf = chain_workflow("bench", STEPS)

    async def run(i: int) -> Any:
        result = await engine.run(wf, i, run_id=f"{tag}-{i}")
        assert result.status == "succeeded", result
        return result

    return run


@asynccontextmanager
async def firebreak_postgres(url: str) -> AsyncIterator[Runner]:
    store = PostgresStore(url, schema=f"fbbench_{TAG}")
    async with store:
        try:
            yield _firebreak_runner(Engine(store), "pg")
        finally:
            await store.destroy()


@asynccontextmanager
async def firebreak_redis(url: str) -> AsyncIterator[Runner]:
    store = RedisStore(url, prefix=f"fbbench_{TAG}")
    async with store:
        try:
            yield _firebreak_runner(Engine(store), "redis")
        finally:
            await store.destroy()


class State(TypedDict):
    x: int


@asynccontextmanager
async def langgraph_postgres(url: str) -> AsyncIterator[Runner]:
    from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver  # noqa: PLC0415 - peer
    from langgraph.graph import END, START, StateGraph  # noqa: PLC0415
    from psycopg.rows import dict_row  # noqa: PLC0415

    async def node(state: State) -> State:
        return {"x": await noop(state["x"])}

    graph = StateGraph(State)
    for k in range(STEPS):
        graph.add_node(f"s{k}", node)
    graph.add_edge(START, "s0")
    for k in range(1, STEPS):
        graph.add_edge(f"s{k - 1}", f"s{k}")
    graph.add_edge(f"s{STEPS - 1}", END)
    # The setup LangGraph documents for concurrent use: a pool, autocommit, dict rows.
    kwargs = {"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row}
    async with AsyncConnectionPool(url, max_size=POOL, kwargs=kwargs, open=False) as pool:
        await pool.open(wait=True)
        saver = AsyncPostgresSaver(pool)  # type: ignore[arg-type]
        await saver.setup()
        app = graph.compile(checkpointer=saver)

        async def run(i: int) -> Any:
            return await app.ainvoke({"x": i}, {"configurable": {"thread_id": f"t-{i}"}})

        yield run


@asynccontextmanager
async def dbos_postgres(url: str) -> AsyncIterator[Runner]:
    from dbos import DBOS, DBOSConfig  # noqa: PLC0415 - peer

    config: DBOSConfig = {
        "name": "fbbench",
        "system_database_url": url,
        "log_level": "WARNING",
        "enable_otlp": False,
    }
    DBOS(config=config)

    @DBOS.step()
    async def step(x: int) -> int:
        return await noop(x)

    @DBOS.workflow()
    async def chain(x: int) -> int:
        for _ in range(STEPS):
            x = await step(x)
        return x

    DBOS.launch()
    try:

        async def run(i: int) -> Any:
            return await chain(i)

        yield run
    finally:
        DBOS.destroy(destroy_registry=True)


@asynccontextmanager
async def raw_insert(url: str) -> AsyncIterator[Runner]:
    schema = f"fbbench_raw_{TAG}"
    async with AsyncConnectionPool(
        url, min_size=POOL, max_size=POOL, kwargs={"autocommit": True}, open=False
    ) as pool:
        await pool.open(wait=True)
        async with pool.connection() as conn:
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            await conn.execute(
                sql.SQL("CREATE TABLE {}.t (k text, n int, v text, PRIMARY KEY (k, n))").format(
                    sql.Identifier(schema)
                )
            )
        insert = sql.SQL("INSERT INTO {}.t VALUES (%s, %s, %s)").format(sql.Identifier(schema))
        payload = "x" * 40

        async def run(i: int) -> None:
            key = str(i)
            for n in range(STEPS):
                async with pool.connection() as conn:
                    await conn.execute(insert, (key, n, payload))

        try:
            yield run
        finally:
            async with pool.connection() as conn:
                await conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


@asynccontextmanager
async def raw_set(url: str) -> AsyncIterator[Runner]:
    prefix = f"fbbench_raw_{TAG}"
    client = aioredis.Redis.from_url(url, max_connections=64)
    payload = "x" * 40

    async def run(i: int) -> None:
        for n in range(STEPS):
            await client.set(f"{prefix}:{i}:{n}", payload)

    try:
        yield run
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 1000):
            await client.unlink(*keys[start : start + 1000])
        await client.aclose()


# -- measuring ------------------------------------------------------------------------------


async def measure(
    runners: dict[str, Runner], sizes: dict[str, tuple[int, int]], rounds: int
) -> dict[str, Figure]:
    """Interleaved rounds: per round every system, sequential then @CONCURRENCY."""
    figures = {name: Figure([], []) for name in runners}
    first = 1_000_000
    for name, run in runners.items():  # warm up: imports, caches, prepared plans, pools
        await concurrent(run, first, max(sizes[name][1] // 5, CONCURRENCY))
        first += max(sizes[name][1] // 5, CONCURRENCY)
    for _ in range(rounds):
        for name, run in runners.items():
            n_seq, n_conc = sizes[name]
            figures[name].seq.append(await sequential(run, first, n_seq))
            first += n_seq
            figures[name].conc.append(await concurrent(run, first, n_conc))
            first += n_conc
    return figures


async def profile(run: Runner, n: int, top: int = 25) -> str:
    """cProfile of `n` workflows, `CONCURRENCY` at a time: where the client's time goes."""
    profiler = cProfile.Profile()
    profiler.enable()
    await concurrent(run, 5_000_000, n)
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _ver(name: str) -> str:
    try:
        return version(name)
    except Exception:
        return "?"


async def main(args: argparse.Namespace) -> None:
    quick: bool = args.quick
    rounds = 2 if quick else 4
    sizes = {
        FB_PG: (50, 1000) if quick else (200, 3000),
        FB_REDIS: (100, 2000) if quick else (300, 5000),
        LG_PG: (10, 100) if quick else (30, 300),
        DBOS_PG: (10, 100) if quick else (30, 300),
        RAW_INSERT: (50, 1000) if quick else (200, 3000),
        RAW_SET: (200, 2000) if quick else (500, 5000),
    }
    pg_admin, redis_url = args.postgres_url, args.redis_url
    async with await psycopg.AsyncConnection.connect(pg_admin, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT version(), current_setting('synchronous_commit'), current_setting('fsync')"
        )
        pg_version, sync_commit, fsync = await cur.fetchone() or ("?", "?", "?")
    client = aioredis.Redis.from_url(redis_url)
    info = await client.info("server")
    aof = (await client.config_get("appendonly")).get("appendonly", "?")
    await client.aclose()
    print(
        f"python {platform.python_version()} on {platform.machine()} ({os.cpu_count()} CPUs),"
        f" firebreak {fb.__version__}, langgraph {_ver('langgraph')}, langgraph-checkpoint-postgres"
        f" {_ver('langgraph-checkpoint-postgres')}, dbos {_ver('dbos')}, psycopg"
        f" {_ver('psycopg')}, redis-py {_ver('redis')}"
    )
    print(
        f"{pg_version.split(' on ')[0]} (synchronous_commit={sync_commit}, fsync={fsync});"
        f" Redis {info.get('redis_version')} (appendonly={aof})"
    )
    print(f"{STEPS} steps per workflow, {CONCURRENCY} concurrent; best of {rounds} rounds")
    logging.getLogger("dbos").setLevel(logging.WARNING)

    async with AsyncExitStack() as stack:
        fb_db = await stack.enter_async_context(scratch_database(pg_admin, f"fbbench_{TAG}"))
        lg_db = await stack.enter_async_context(scratch_database(pg_admin, f"fbbench_lg_{TAG}"))
        dbos_db = with_db(pg_admin, f"fbbench_dbos_{TAG}")  # DBOS creates its own database
        stack.push_async_callback(_drop_database, pg_admin, f"fbbench_dbos_{TAG}")
        variants: dict[str, Variant] = {
            RAW_INSERT: raw_insert(fb_db),
            FB_PG: firebreak_postgres(fb_db),
            LG_PG: langgraph_postgres(lg_db),
            DBOS_PG: dbos_postgres(dbos_db),
            RAW_SET: raw_set(redis_url),
            FB_REDIS: firebreak_redis(redis_url),
        }
        if args.only:
            variants = {k: v for k, v in variants.items() if k in args.only}
        runners = {name: await stack.enter_async_context(v) for name, v in variants.items()}
        if args.profile:
            name = next(n for n in runners if args.profile.lower() in n.lower())
            print(f"\ncProfile: {name}, {sizes[name][1]} workflows @{CONCURRENCY}")
            print(await profile(runners[name], sizes[name][1]))
            return
        figures = await measure(runners, {k: sizes[k] for k in runners}, rounds)

    print()
    header = f"{'system':32} {'µs/step seq':>12} {'wf/s seq':>9} {'wf/s @50':>9}  rounds @50"
    print(header)
    print("-" * len(header))
    for name, fig in figures.items():
        print(
            f"{name:32} {fig.seq_step_us:12.0f} {1 / fig.seq_s:9.0f} {fig.conc_wps:9.0f}"
            f"  {', '.join(f'{1 / c:.0f}' for c in fig.conc)}"
        )
    report(figures)


def report(figures: dict[str, Figure]) -> None:
    def wps(name: str) -> float | None:
        return figures[name].conc_wps if name in figures else None

    def seq(name: str) -> float | None:
        return 1 / figures[name].seq_s if name in figures else None

    print()
    print("ratios (workflows/s, @50 unless said)")
    pairs = [
        (FB_PG, LG_PG, 15.0),
        (FB_PG, DBOS_PG, 20.0),
        (FB_PG, RAW_INSERT, None),
        (FB_REDIS, RAW_SET, None),
        (FB_REDIS, LG_PG, None),
        (FB_REDIS, DBOS_PG, None),
    ]
    for a, b, target in pairs:
        x, y = wps(a), wps(b)
        if x is None or y is None:
            continue
        line = f"  {a} / {b} = {x / y:.1f}x"
        if target is not None:
            line += f" (target >= {target:g}x)  {_mark(x / y >= target)}"
        print(line)
        sx, sy = seq(a), seq(b)
        if sx is not None and sy is not None:
            print(f"      sequential: {sx / sy:.1f}x")
    print("targets")
    for name, target in ((FB_PG, 500.0), (FB_REDIS, 1000.0)):
        x = wps(name)
        if x is not None:
            print(
                f"  {name} @{CONCURRENCY}: {x:.0f} workflows/s (target >= {target:g})"
                f"  {_mark(x >= target)}"
            )


async def _drop_database(admin_url: str, name: str) -> None:
    async with await psycopg.AsyncConnection.connect(admin_url, autocommit=True) as conn:
        await conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer workflows, fewer rounds")
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get(
            "FIREBREAK_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
        help="an admin URL: the bench creates and drops databases of its own",
    )
    parser.add_argument(
        "--redis-url",
        default=os.environ.get("FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    parser.add_argument("--profile", default=None, help="cProfile one system (substring)")
    parser.add_argument("--only", nargs="*", default=None, help="measure only these systems")
    asyncio.run(main(parser.parse_args()))
