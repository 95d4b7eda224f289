"""Answering the callers of a batch: each waits on a future for its own reply or error."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["answer", "fail"]


def answer(future: asyncio.Future[Any], reply: Any) -> None:
    """Give a caller its reply, or raise it there when it is an error; skip a cancelled one."""
    if future.done():  # its caller was cancelled
        return
    if isinstance(reply, BaseException):
        future.set_exception(reply)
    else:
        future.set_result(reply)


def fail(batch: Iterable[tuple[Any, ...]], error: BaseException) -> None:
    """Raise `error` to every caller of `batch`, whose entries end with the caller's future."""
    for *_, future in batch:
        if not future.done():
            future.set_exception(error)
