"""Fixtures of the store conformance suite: every contract test runs on every backend."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from firebreak.store import CheckpointStore, MemoryStore, SQLiteStore
from firebreak.testing import FakeClock

BACKENDS = ["memory", "sqlite"]


@pytest.fixture
def wall() -> FakeClock:
    """A clock moved by hand: lease expiry is tested without sleeping."""
    return FakeClock(autojump=False)


@pytest.fixture
def make_store(tmp_path: Path, wall: FakeClock) -> Callable[[str], CheckpointStore]:
    def make(kind: str) -> CheckpointStore:
        if kind == "memory":
            return MemoryStore(clock=wall.wall)
        return SQLiteStore(tmp_path / "store.db", clock=wall.wall)

    return make


@pytest.fixture(params=BACKENDS)
async def store(
    request: pytest.FixtureRequest, make_store: Callable[[str], CheckpointStore]
) -> AsyncIterator[CheckpointStore]:
    async with make_store(request.param) as opened:
        yield opened
