"""Helpers for testing code that uses firebreak, and the conformance suite for stores.

* `FakeClock`: virtual time, so sleeps, timeouts and lease expiry cost no real time.
* `capture_events`: collect the events emitted inside a block.
* `MemoryStore`: a complete `CheckpointStore` in dicts.
* `CHECKS`, `run_conformance`, `conformance_env`: the store contract, to check a store
  of your own the way firebreak checks its memory, SQLite, Redis and PostgreSQL backends.

This package never imports pytest.

>>> import asyncio
>>> from firebreak.testing import FakeClock
>>> clock = FakeClock()
>>> async def main() -> float:
...     await clock.sleep(3600)          # returns at once: virtual time jumps
...     return clock.now()
>>> asyncio.run(main())
3600.0

Checking a store of your own
----------------------------
Write a factory: ``factory(clock)`` gets the wall clock your store must use, and returns
either a new store over empty data of its own (the checks that reopen data then skip), or
an async context manager that reserves an isolated namespace, yields a zero-argument
function building stores over it, and deletes the namespace on exit (every check runs,
resume and rival orchestrators included). `firebreak.testing.conformance` spells out
the contract. With a key prefix per check::

    import uuid
    from contextlib import asynccontextmanager

    from mypackage import MyStore

    @asynccontextmanager
    async def my_backend(clock):
        prefix = f"conformance-{uuid.uuid4().hex}"
        yield lambda: MyStore("myproto://localhost", prefix=prefix, clock=clock)
        async with MyStore("myproto://localhost", prefix=prefix, clock=clock) as store:
            await store.destroy()  # leave nothing behind

With pytest (and pytest-asyncio), one test per check, named after it::

    import pytest
    from firebreak.testing import CHECKS, Check, CheckSkipped, conformance_env

    @pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
    async def test_my_store_conforms(check: Check) -> None:
        async with conformance_env(my_backend) as env:
            try:
                await check(env)
            except CheckSkipped as skip:
                pytest.skip(str(skip))

Without pytest, `run_conformance` runs every check and reports each outcome: ``None``
passed, a `CheckSkipped` does not apply, anything else failed::

    import asyncio
    from firebreak.testing import CheckSkipped, run_conformance

    results = asyncio.run(run_conformance(my_backend))
    failures = [(name, exc) for name, exc in results
                if exc is not None and not isinstance(exc, CheckSkipped)]
    for name, exc in failures:
        print(f"{name}: {type(exc).__name__}: {exc}")

A check is a plain ``async def check_xxx(env: ConformanceEnv) -> None``; write your own
backend-specific ones the same way, using ``env.store``, ``env.wall.advance(seconds)``,
``env.make_store()`` and `raises`.
"""

from __future__ import annotations

from firebreak.store.memory import MemoryStore
from firebreak.testing.capture import capture_events
from firebreak.testing.clock import FakeClock
from firebreak.testing.conformance import (
    CHECKS,
    Check,
    CheckSkipped,
    ConformanceEnv,
    Raised,
    StoreFactory,
    StoreMaker,
    conformance_env,
    raises,
    run_conformance,
)

__all__ = [
    "CHECKS",
    "Check",
    "CheckSkipped",
    "ConformanceEnv",
    "FakeClock",
    "MemoryStore",
    "Raised",
    "StoreFactory",
    "StoreMaker",
    "capture_events",
    "conformance_env",
    "raises",
    "run_conformance",
]
