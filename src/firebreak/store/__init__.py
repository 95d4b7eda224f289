"""Checkpoint stores: where runs, step results, leases, shared state and queues live.

Build one from a URL with `open_store` and use it as ``async with``::

    async with open_store("sqlite:///runs.db") as store:
        run, created = await store.create_run("inv-42", "invoice", {"id": 42})

Backends: ``memory://`` (`MemoryStore`), ``sqlite:///path`` (`SQLiteStore`, the default),
``redis://host:port/db?prefix=P&finished_ttl=S`` (`firebreak.store.redis.RedisStore`, extra
``redis``) and ``postgresql://user@host/db?schema=S`` (`firebreak.store.postgres.PostgresStore`,
extra ``postgres``); those two are imported only when their scheme is asked for.
"""

from __future__ import annotations

import importlib
import os
import re
from urllib.parse import parse_qsl

from firebreak._urls import shown
from firebreak.store.base import (
    JSON,
    STEP_TRANSITIONS,
    CheckpointStore,
    DeadLetter,
    Lease,
    ReviewItem,
    ReviewStatus,
    RunRecord,
    RunStatus,
    StepRecord,
    StepStatus,
    SupportsBeginFinish,
    SupportsCommitAndFinish,
    SupportsCommitThen,
    SupportsLeaseAndStep,
    SupportsRunIdPrefix,
    WallClock,
    default_clock,
)
from firebreak.store.memory import MemoryStore
from firebreak.store.sqlite import SQLiteStore

__all__ = [
    "DEFAULT_STORE_URL",
    "GENERATED_RUN_ID",
    "JSON",
    "STEP_TRANSITIONS",
    "CheckpointStore",
    "DeadLetter",
    "Lease",
    "MemoryStore",
    "ReviewItem",
    "ReviewStatus",
    "RunRecord",
    "RunStatus",
    "SQLiteStore",
    "StepRecord",
    "StepStatus",
    "SupportsBeginFinish",
    "SupportsCommitAndFinish",
    "SupportsCommitThen",
    "SupportsLeaseAndStep",
    "SupportsRunIdPrefix",
    "find_dead_letter",
    "find_run_id",
    "open_store",
]

DEFAULT_STORE_URL = "sqlite:///./.firebreak/firebreak.db"
"""Where runs go when neither the caller nor ``$FIREBREAK_STORE`` says otherwise."""

_SUPPORTED = ("memory://", "sqlite:///PATH", "redis://HOST[:PORT][/DB]", "postgresql://…")
# Backends behind an optional extra, imported only when their scheme is asked for;
# each module offers `from_url(url, *, clock) -> CheckpointStore`.
_LAZY = {
    "redis": ("firebreak.store.redis", "redis"),
    "rediss": ("firebreak.store.redis", "redis"),
    "postgresql": ("firebreak.store.postgres", "postgres"),
    "postgres": ("firebreak.store.postgres", "postgres"),
}
_SQLITE_OPTIONS = frozenset({"synchronous", "busy_timeout"})


def open_store(url: str | None = None, *, clock: WallClock = default_clock) -> CheckpointStore:
    """Build (not connect) the store a URL names; call ``setup()`` or use ``async with``.

    Args:
        url: ``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////abs/path.db``,
            optionally with ``?synchronous=NORMAL`` or ``?busy_timeout=10``. ``None`` means
            ``$FIREBREAK_STORE``, else `DEFAULT_STORE_URL`.
        clock: wall clock for timestamps and lease expiry.

    Raises:
        ValueError: the scheme is unknown or not supported yet, or an option is bad.

    Example:
        >>> store = open_store("sqlite:///.firebreak/firebreak.db")
    """
    if url is None:
        url = os.environ.get("FIREBREAK_STORE") or DEFAULT_STORE_URL
    scheme, sep, rest = url.partition("://")
    if not sep:
        hint = "" if ":" in url else f" (a SQLite file: sqlite:///{url})"
        raise ValueError(
            f"store URL {shown(url)!r} has no scheme{hint}; supported: {', '.join(_SUPPORTED)}"
        )
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryStore(clock=clock)
    if scheme == "sqlite":
        path, _, query = rest.partition("?")
        if not path.startswith("/") or len(path) < 2:
            raise ValueError(
                f"store URL {shown(url)!r}: write sqlite:///relative/path.db or sqlite:////abs/path.db"
            )
        options = dict(parse_qsl(query, strict_parsing=bool(query)))
        unknown = set(options) - _SQLITE_OPTIONS
        if unknown:
            raise ValueError(
                f"store URL {shown(url)!r}: unknown option(s) {', '.join(sorted(unknown))}"
            )
        synchronous = options.get("synchronous", "FULL").upper()
        if synchronous not in {"FULL", "NORMAL"}:
            raise ValueError(f"store URL {shown(url)!r}: synchronous must be FULL or NORMAL")
        return SQLiteStore(
            path[1:],
            clock=clock,
            synchronous="FULL" if synchronous == "FULL" else "NORMAL",
            busy_timeout=float(options.get("busy_timeout", 5.0)),
        )
    if scheme in _LAZY:
        module_name, extra = _LAZY[scheme]
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(
                f"store URL {shown(url)!r} needs the {extra!r} extra: "
                f"pip install 'firebreak[{extra}]' ({exc})"
            ) from exc
        store: CheckpointStore = module.from_url(url, clock=clock)
        return store
    raise ValueError(
        f"store scheme {scheme!r} is not supported; supported: {', '.join(_SUPPORTED)}"
    )


GENERATED_RUN_ID = re.compile(r"[0-9a-f]{32}")
"""The ids firebreak makes (``uuid4().hex``): the only ones a start of stands for."""
_SHORT_RUN_ID = re.compile(r"[0-9a-f]{4,31}")
_CANDIDATES = 8


async def find_run_id(store: CheckpointStore, key: str) -> str:
    """`key` if a run has that id, else the one made-up run id starting with it, else `key`.

    A unique start (4 hex digits or more) of an id firebreak made stands for it, as with
    git's and docker's short ids. Ids people chose are matched whole: ``inv-4`` must not
    name ``inv-42``, and no command may act on another run than the one typed. A store
    without `SupportsRunIdPrefix` answers full ids only. A missing run is the caller's to
    report: `key` comes back as it was.

    Raises:
        ValueError: several made-up ids start with `key`.
    """
    if (
        not _SHORT_RUN_ID.fullmatch(key)
        or not isinstance(store, SupportsRunIdPrefix)
        or await store.get_run(key) is not None
    ):
        return key
    found = [
        run_id
        for run_id in await store.run_ids_starting(key, limit=_CANDIDATES)
        if GENERATED_RUN_ID.fullmatch(run_id)
    ]
    if len(found) > 1:
        raise ValueError(
            f"{key!r} is the start of several runs' ids (e.g. {', '.join(found[:2])}): "
            "give more of it"
        )
    return found[0] if found else key


async def find_dead_letter(store: CheckpointStore, key: str) -> DeadLetter | None:
    """The dead-letter entry with id `key`, else the entry of run `key`, else ``None``.

    A run has at most one entry, so its run id names it as well as the entry's own id
    does (the one people have at hand). Both matched whole: see `find_run_id` for the
    CLI's short ids.
    """
    entry = await store.dlq_get(key)
    return entry if entry is not None else await store.dlq_of_run(key)
