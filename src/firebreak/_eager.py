"""Awaiting a coroutine that was started by hand: arm timers only for calls that wait.

A timer (an attempt's timeout, a run's lease renewal) can only fire while the code it
guards is suspended. So a caller may run the coroutine up to its first suspension with
``coro.send(None)`` and arm the timer only if it did suspend; `await_rest` then awaits the
rest exactly as ``await coro`` would have. Python 3.12's eager tasks do the same for a task.
"""

from __future__ import annotations

import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["await_rest"]

T = TypeVar("T")


@types.coroutine
def await_rest(coro: Coroutine[Any, Any, T], signal: Any) -> Generator[Any, Any, T]:
    """Await `coro` from its first suspension, where it yielded `signal`."""
    while True:
        try:
            sent = yield signal
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # noqa: BLE001 - thrown in by the task: pass it on
            try:
                signal = coro.throw(exc)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
        else:
            try:
                signal = coro.send(sent)
            except StopIteration as done:
                return done.value  # type: ignore[no-any-return]
