"""Shared bits of the engine tests: stores of both kinds, a recorder of calls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from firebreak.store import CheckpointStore, MemoryStore, SQLiteStore

BACKENDS = ["memory", "sqlite"]


@asynccontextmanager
async def opened(kind: str, tmp_path: Path, **options: object) -> AsyncIterator[CheckpointStore]:
    store: CheckpointStore = (
        MemoryStore(**options) if kind == "memory" else SQLiteStore(tmp_path / "runs.db", **options)  # type: ignore[arg-type]
    )
    async with store:
        yield store


class Calls:
    """Records which agents ran, in order."""

    def __init__(self) -> None:
        self.log: list[str] = []

    def __call__(self, name: str) -> None:
        self.log.append(name)

    def count(self, name: str) -> int:
        return self.log.count(name)
