"""The `CheckpointStore` conformance suite: the store contract as plain async functions.

Every check is ``async def check_xxx(env: ConformanceEnv) -> None`` and fails with a plain
``AssertionError`` (or whatever the store raised), so the suite needs no test framework:
`run_conformance` runs it anywhere, and a pytest suite parametrises over `CHECKS`. The
package docstring of `firebreak.testing` shows both.

The factory contract
--------------------
A `StoreFactory` is called once per check as ``factory(clock)``, where ``clock`` is the
wall clock (a `WallClock`, epoch seconds) the store must use for every timestamp and
lease expiry; the checks move it by hand. It returns one of:

* a `CheckpointStore`, built but not set up, over empty data of its own. The suite sets
  it up, runs one check and closes it. The checks that need a second instance on the same
  data (resume, rival orchestrators) report `CheckSkipped`. Right for `MemoryStore`.
* an async context manager (``@asynccontextmanager`` is simplest) that reserves an
  isolated, empty namespace (a key prefix, a schema, a database file) and yields a
  `StoreMaker`: a zero-argument callable building a new, not yet set up store over that
  namespace, every call the same data. The suite calls it once for the check's store and
  again whenever a check needs a second instance. On exit the context manager deletes the
  namespace; every store it made is closed by then. Every check runs, resume included.

Either way nothing is shared between checks, so they may run in any order, and against a
server other suites use at the same time.

Example:
    >>> from contextlib import asynccontextmanager
    >>> import uuid
    >>> @asynccontextmanager
    ... async def my_backend(clock):
    ...     prefix = f"conformance-{uuid.uuid4().hex}"
    ...     yield lambda: MyStore("myproto://host", prefix=prefix, clock=clock)
    ...     async with MyStore("myproto://host", prefix=prefix, clock=clock) as store:
    ...         await store.destroy()
    >>> results = await run_conformance(my_backend)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TypeAlias

from firebreak.store.base import CheckpointStore, WallClock
from firebreak.testing._checks import abilities, instances, leases, queues, runs, state, steps
from firebreak.testing._harness import (
    CheckSkipped,
    ConformanceEnv,
    Raised,
    StoreMaker,
    raises,
)
from firebreak.testing.clock import FakeClock

__all__ = [
    "CHECKS",
    "Check",
    "CheckSkipped",
    "ConformanceEnv",
    "Raised",
    "StoreFactory",
    "StoreMaker",
    "conformance_env",
    "raises",
    "run_conformance",
]

Check: TypeAlias = Callable[[ConformanceEnv], Awaitable[None]]
"""One contract check: returns if the store conforms, raises if not."""

StoreFactory: TypeAlias = Callable[
    [WallClock], CheckpointStore | AbstractAsyncContextManager[StoreMaker]
]
"""``factory(clock)``: a store of its own, or a context manager over an isolated namespace.

See the module docstring for the exact contract.
"""

CHECKS: tuple[Check, ...] = (
    *runs.CHECKS,
    *leases.CHECKS,
    *steps.CHECKS,
    *state.CHECKS,
    *queues.CHECKS,
    *instances.CHECKS,
    *abilities.CHECKS,
)
"""Every contract check, in a stable order, each under a stable ``check_...`` name."""


@asynccontextmanager
async def conformance_env(factory: StoreFactory) -> AsyncIterator[ConformanceEnv]:
    """Build one check's `ConformanceEnv` from `factory`, and tear it down afterwards.

    The clock is a fresh ``FakeClock(autojump=False)``; the store is set up on entry and
    closed (and the namespace deleted, for a context-manager factory) on exit.

    Raises:
        ValueError: the store does not tell time by the clock the factory was given.

    Example:
        >>> async with conformance_env(lambda clock: MemoryStore(clock=clock)) as env:
        ...     await check_commit_is_idempotent(env)
    """
    wall = FakeClock(autojump=False)
    made = factory(wall.wall)
    if isinstance(made, CheckpointStore):
        async with made as store:
            _check_clock(store, wall)
            yield ConformanceEnv(store=store, wall=wall)
        return
    async with made as maker, maker() as store:
        _check_clock(store, wall)
        yield ConformanceEnv(store=store, wall=wall, maker=maker)


def _check_clock(store: CheckpointStore, wall: FakeClock) -> None:
    if store.clock() != wall.wall():
        raise ValueError(
            "the store must tell time by the clock its factory is given: "
            "factory(clock) -> MyStore(..., clock=clock)"
        )


async def run_conformance(
    factory: StoreFactory, *, checks: Iterable[Check] = CHECKS
) -> list[tuple[str, BaseException | None]]:
    """Run `checks` one by one, each in a fresh `conformance_env`, and report every outcome.

    Args:
        factory: builds the store under test; see `StoreFactory` and the module docstring.
        checks: which checks to run; all of them unless told.

    Returns:
        ``(check name, outcome)`` per check, in order: ``None`` if it passed, a
        `CheckSkipped` if it does not apply to this backend, anything else is a failure
        (the exception the check raised, traceback attached).

    Raises:
        RuntimeError: Python runs with ``-O``, which strips the checks' assertions.

    Example:
        >>> results = await run_conformance(lambda clock: MemoryStore(clock=clock))
        >>> failed = [(name, exc) for name, exc in results
        ...           if exc is not None and not isinstance(exc, CheckSkipped)]
    """
    if not __debug__:
        raise RuntimeError("the conformance checks are assertions: run Python without -O")
    results: list[tuple[str, BaseException | None]] = []
    for check in checks:
        name = getattr(check, "__name__", repr(check))
        try:
            async with conformance_env(factory) as env:
                await check(env)
        except Exception as exc:  # noqa: BLE001 -- any error is the check's outcome, reported
            results.append((name, exc))
        else:
            results.append((name, None))
    return results
