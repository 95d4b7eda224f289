"""How `RedisStore` reaches its server: its URL, the pool, the schema check, one-line errors.

The pool is bounded and waits for a free connection, so hundreds of concurrent runs share
a few dozen connections instead of failing with "too many". Errors name the server
(``redis host:port/db``) on one line.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError, ResponseError

from firebreak._urls import shown, split_options
from firebreak.errors import StoreCorrupt, StoreError

__all__ = [
    "check_schema",
    "delete_prefix",
    "open_client",
    "persists",
    "server",
    "split_url",
    "translate",
    "where",
]

_OPTIONS = frozenset({"prefix", "finished_ttl", "failed_ttl"})
_TTLS = ("finished_ttl", "failed_ttl")


def split_url(url: str) -> tuple[str, str, dict[str, float | None]]:
    """The URL for redis-py, the prefix, and the TTLs the URL sets (``None``: never).

    A TTL is seconds, or ``none`` (or ``never``, or empty) for never; `ValueError`
    otherwise. Other query options stay in the URL for redis-py.
    """
    ours, rest = split_options(url, _OPTIONS)
    try:
        check_client_options(rest)
    except ValueError as exc:
        raise ValueError(f"store URL {shown(url)!r}: {exc}") from None
    ttls: dict[str, float | None] = {}
    for name in _TTLS:
        if name not in ours:
            continue
        text = ours[name].strip().lower()
        if text in {"none", "never", ""}:
            ttls[name] = None
            continue
        try:
            ttls[name] = float(text)
        except ValueError:
            raise ValueError(
                f"store URL {shown(url)!r}: {name} must be seconds or 'none'"
            ) from None
    return rest, ours.get("prefix", "firebreak"), ttls


def check_client_options(url: str) -> None:
    """Refuse what redis-py would refuse only at the first connect: an option it lacks.

    Raises:
        ValueError: an option redis-py does not know (a `TypeError` deep in a connect).
    """
    try:
        aioredis.ConnectionPool.from_url(url).make_connection()  # type: ignore[no-untyped-call]
    except TypeError as exc:
        raise ValueError(f"an option redis-py does not know ({exc})") from None


def where(url: str) -> str:
    """``host:port/db`` of a Redis URL, as error messages name the server."""
    parts = urlsplit(url)
    try:
        port = parts.port or 6379
    except ValueError as exc:
        raise ValueError(f"store URL {shown(url)!r}: {exc}") from None
    db = parts.path.strip("/") or "0"
    return f"{parts.hostname or 'localhost'}:{port}/{db}"


def server(url: str) -> tuple[str, str, int, str, str]:
    """Scheme, host, port, database and user of a Redis URL: what `same_server` compares."""
    parts = urlsplit(url)
    db = dict(parse_qsl(parts.query)).get("db") or parts.path.strip("/") or "0"
    return (
        parts.scheme.lower(),
        (parts.hostname or "localhost").lower(),
        parts.port or 6379,
        db,
        parts.username or "",
    )


def open_client(url: str, *, max_connections: int) -> aioredis.Redis:
    """A client on a bounded pool that waits for a free connection (connects lazily)."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        decode_responses=True,
        socket_timeout=5.0,
        socket_connect_timeout=2.0,
        retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), 2),
        max_connections=max_connections,
        timeout=10.0,
    )
    return aioredis.Redis.from_pool(pool)


def translate(where: str, exc: RedisError) -> StoreError:
    """A redis-py error as a one-line `StoreError` naming the server."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return StoreError(f"redis {where}: {type(exc).__name__}: {first}")


async def check_schema(client: aioredis.Redis, *, prefix: str, where: str, version: int) -> int:
    """Mark a new prefix with `version` and return the prefix's version.

    `StoreCorrupt` if it holds a newer one, or is not ours.
    """
    key = f"{prefix}:schema"
    try:
        await client.set(key, str(version), nx=True)
        found = await client.get(key)
    except RedisError as exc:
        raise translate(where, exc) from None
    try:
        written = int(str(found))
    except ValueError:
        raise StoreCorrupt(
            f"redis {where}: key {key!r} is {found!r}, not a firebreak schema version;"
            " use another prefix"
        ) from None
    if written > version:
        raise StoreCorrupt(
            f"redis {where}: prefix {prefix!r} was written by a newer firebreak"
            f" (schema {written} > {version}); upgrade firebreak"
        )
    return written


async def persists(client: aioredis.Redis, where: str) -> bool | None:
    """Whether the server persists anything (an append-only file or save points).

    ``None`` if it cannot tell: ``CONFIG`` is often disabled on managed Redis.
    """
    try:
        aof = await client.config_get("appendonly")
        save = await client.config_get("save")
    except ResponseError:
        return None
    except RedisError as exc:
        raise translate(where, exc) from None
    return not (aof.get("appendonly") == "no" and not str(save.get("save") or "").strip())


def glob_escape(text: str) -> str:
    """`text` matched literally in a ``SCAN`` ``MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


async def delete_prefix(client: aioredis.Redis, prefix: str) -> None:
    """Delete every key under `prefix` (``<prefix>:*``), a thousand at a time."""
    pattern = glob_escape(prefix) + ":*"
    batch: list[str] = []
    async for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            await client.unlink(*batch)
            batch.clear()
    if batch:
        await client.unlink(*batch)
