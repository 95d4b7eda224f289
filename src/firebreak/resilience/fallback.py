"""Fallback chains: another prompt, a backup model, a cached answer, a neutral default."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

from firebreak.errors import FallbackExhausted
from firebreak.events import FallbackUsed, emit
from firebreak.resilience.classify import ErrorFilter, matcher

__all__ = ["Fallback"]

P = ParamSpec("P")
T = TypeVar("T")

_MISSING: Any = object()


class Fallback:
    """When the primary call fails, try each alternative in turn with the same arguments.

    If every alternative fails too, `default` is returned when given; otherwise
    `FallbackExhausted` is raised with every error in order (the last one chained).
    Only errors matching `on` (default: any `Exception`) move down the chain; others
    propagate at once. Each step down emits `FallbackUsed`.

    >>> import firebreak as fb
    >>> async def backup_model(prompt: str) -> str:
    ...     return "short answer"
    >>> @fb.Fallback(backup_model, default="")
    ... async def ask(prompt: str) -> str:
    ...     raise TimeoutError
    """

    __slots__ = ("_match", "alternatives", "default", "name")

    def __init__(
        self,
        *alternatives: Callable[..., Awaitable[Any]],
        default: Any = _MISSING,
        on: ErrorFilter = Exception,
        name: str = "fallback",
    ) -> None:
        self.alternatives = alternatives
        self.default = default
        self.name = name
        self._match = matcher(on)

    def __repr__(self) -> str:
        return f"Fallback({len(self.alternatives)} alternatives, name={self.name!r})"

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)``, falling back down the chain on failure."""
        try:
            return await fn(*args, **kwargs)
        except Exception as exc:
            if not self._match(exc):
                raise
            errors: list[BaseException] = [exc]
        for index, alternative in enumerate(self.alternatives, 1):
            emit(FallbackUsed(source=self.name, index=index, error_type=type(errors[-1]).__name__))
            try:
                return await alternative(*args, **kwargs)  # type: ignore[no-any-return]
            except Exception as exc:
                if not self._match(exc):
                    raise
                errors.append(exc)
        if self.default is not _MISSING:
            index = len(self.alternatives) + 1
            emit(FallbackUsed(source=self.name, index=index, error_type=type(errors[-1]).__name__))
            return self.default  # type: ignore[no-any-return]
        raise FallbackExhausted(errors) from errors[-1]

    def __call__(self, fn: Callable[P, Awaitable[T]], /) -> Callable[P, Awaitable[T]]:
        """Decorate an async function."""
        call = self.call

        @functools.wraps(fn)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return await call(fn, *args, **kwargs)

        return wrapper
