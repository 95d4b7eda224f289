"""What every conformance check is handed (`ConformanceEnv`) and the tools it uses.

Kept apart from `conformance` so the check modules can import it without a cycle;
users import these names from `firebreak.testing`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Generic, TypeAlias, TypeVar

from firebreak.store.base import CheckpointStore, Lease, StepRecord
from firebreak.testing.clock import FakeClock

__all__ = ["CheckSkipped", "ConformanceEnv", "Raised", "StoreMaker", "raises"]

E = TypeVar("E", bound=BaseException)

StoreMaker: TypeAlias = Callable[[], CheckpointStore]
"""Build a new, not yet set up store over one isolated namespace's data."""


class CheckSkipped(Exception):
    """A check does not apply to this backend (say, resume on a store that keeps nothing).

    `run_conformance` reports it as the check's outcome; a pytest wrapper turns it into
    ``pytest.skip(str(exc))``.
    """


@dataclass(frozen=True, slots=True, kw_only=True)
class ConformanceEnv:
    """One check's world: a fresh store on an isolated namespace, and its wall clock.

    Build one with `conformance_env`; each check gets its own and leaves nothing behind.
    """

    store: CheckpointStore
    """Set up and empty; its clock is ``wall.wall``. Closed when the check ends."""
    wall: FakeClock
    """The store's clock, moved only by ``wall.advance(...)`` (``autojump=False``)."""
    maker: StoreMaker | None = field(default=None, repr=False)
    """Builds another store over the same data, or ``None`` if the backend keeps nothing."""

    @property
    def persistent(self) -> bool:
        """Whether a second store instance sees what this one wrote (resume works)."""
        return self.maker is not None

    def make_store(self) -> CheckpointStore:
        """Return a new, not yet set up store over this env's data; use it as ``async with``.

        It stands for a second orchestrator, or for the same one after a restart.

        Raises:
            CheckSkipped: the backend is not persistent, so the calling check does not apply.
        """
        if self.maker is None:
            raise CheckSkipped("the backend is not persistent: no second store sees its data")
        return self.maker()


class Raised(Generic[E]):
    """What `raises` caught: the exception is `value` once the block has exited."""

    __slots__ = ("_value",)

    def __init__(self) -> None:
        self._value: E | None = None

    @property
    def value(self) -> E:
        """The exception the block raised."""
        if self._value is None:
            raise AssertionError("the `raises` block has not raised yet")
        return self._value


@contextmanager
def raises(expected: type[E], *, match: str | None = None) -> Iterator[Raised[E]]:
    """Assert that the block raises `expected` (or a subclass), like ``pytest.raises``.

    Args:
        expected: the exception type the block must raise; anything else propagates.
        match: a regular expression that must be found (``re.search``) in ``str(exc)``.

    Example:
        >>> with raises(KeyError) as err:
        ...     {}["missing"]
        >>> err.value.args
        ('missing',)
    """
    caught: Raised[E] = Raised()
    try:
        yield caught
    except expected as exc:
        if match is not None and not re.search(match, str(exc)):
            raise AssertionError(
                f"{type(exc).__name__}({str(exc)!r}) does not match {match!r}"
            ) from exc
        caught._value = exc  # noqa: SLF001 -- Raised is this function's own result type
    else:
        raise AssertionError(f"the block did not raise {expected.__name__}")


async def leased(store: CheckpointStore, run_id: str = "r1", owner: str = "orch-1") -> Lease:
    """Create a run (workflow ``wf``, input ``{"n": 1}``) and take its lease for 30 s."""
    await store.create_run(run_id, "wf", {"n": 1})
    return await store.acquire_lease(run_id, owner, ttl=30)


def step(run_id: str, agent: str, output: Any = None, **kw: Any) -> StepRecord:
    """A succeeded step unless `kw` says otherwise."""
    kw.setdefault("status", "succeeded")
    return StepRecord(run_id=run_id, agent=agent, output=output, **kw)
