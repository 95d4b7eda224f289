"""`SetupClose`: ``async with`` for the stores and buses, which all set up and close alike."""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["SetupClose"]


class SetupClose:
    """``async with`` a resource: `setup` on entry, `close` on exit (whatever happened)."""

    async def setup(self) -> None:
        """Connect, create what is missing; the subclass says what."""
        raise NotImplementedError

    async def close(self) -> None:
        """Release what `setup` took; idempotent in every subclass."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.setup()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
