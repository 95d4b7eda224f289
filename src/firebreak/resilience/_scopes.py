"""Per-task state for primitives used as ``async with``, so one object serves many tasks."""

from __future__ import annotations

import asyncio
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TaskScopes(Generic[T]):
    """A stack of values per asyncio task: pushed by ``__aenter__``, popped by ``__aexit__``."""

    __slots__ = ("_stacks",)

    def __init__(self) -> None:
        self._stacks: dict[asyncio.Task[Any] | None, list[T]] = {}

    def push(self, value: T) -> None:
        """Remember `value` for the current task's innermost open scope."""
        self._stacks.setdefault(asyncio.current_task(), []).append(value)

    def pop(self) -> T:
        """Take back the value of the current task's innermost open scope."""
        task = asyncio.current_task()
        stack = self._stacks[task]
        value = stack.pop()
        if not stack:
            del self._stacks[task]
        return value
