"""Classifying errors, shared by retry, breaker and fallback.

Timeouts and connection errors are transient; HTTP-like errors with status 408, 429, 500,
502, 503 and 504 are transient and other 4xx permanent; `Transient`/`Permanent` markers
say so explicitly. Cancellation (`asyncio.CancelledError`, `KeyboardInterrupt`,
`SystemExit`) is a `BaseException`, never an `Exception`, so it is never retried and never
counted against a service.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

from firebreak.errors import InvalidOutput, Permanent, Rejected, Transient

__all__ = [
    "ErrorFilter",
    "RetryInfo",
    "http_status",
    "is_permanent",
    "is_transient",
    "matcher",
    "retry_after_of",
    "retry_info",
]

ErrorFilter = (
    type[BaseException] | tuple[type[BaseException], ...] | Callable[[BaseException], bool]
)
"""What a policy accepts as `on=`: error classes or a predicate."""

TRANSIENT_STATUS = frozenset({408, 429, 500, 502, 503, 504})


def http_status(exc: BaseException) -> int | None:
    """The HTTP status of an HTTP-like error (``.status_code``, ``.status`` or ``.response``)."""
    for holder in (exc, getattr(exc, "response", None)):
        if holder is None:
            continue
        for attr in ("status_code", "status"):
            value = getattr(holder, attr, None)
            if isinstance(value, int) and 100 <= value <= 599:
                return value
    return None


def is_transient(exc: BaseException) -> bool:
    """Whether retrying `exc` may help: the default `on=` of `Retry`."""
    if isinstance(exc, Transient):
        return True
    if isinstance(exc, Permanent | Rejected | InvalidOutput):
        return False
    if isinstance(exc, TimeoutError | ConnectionError):
        return True
    status = http_status(exc)
    return status is not None and status in TRANSIENT_STATUS


def is_permanent(exc: BaseException) -> bool:
    """Whether `exc` says nothing about the service's health (a caller's mistake).

    The default of a breaker counts every error except these: `Permanent` markers,
    invalid output, and HTTP 4xx other than 408 and 429.
    """
    if isinstance(exc, Permanent | InvalidOutput):
        return True
    if isinstance(exc, Transient):
        return False
    status = http_status(exc)
    return status is not None and 400 <= status < 500 and status not in TRANSIENT_STATUS


def matcher(on: ErrorFilter) -> Callable[[BaseException], bool]:
    """Turn an `on=` value (classes or predicate) into a predicate."""
    if isinstance(on, type | tuple):
        classes = on

        def by_class(exc: BaseException) -> bool:
            return isinstance(exc, classes)

        return by_class
    return on


def _parse_retry_after(value: Any, wall: float) -> float | None:
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            seconds = float(text)
        except ValueError:
            try:
                when = parsedate_to_datetime(text)
            except (TypeError, ValueError, IndexError):
                return None
            if when.tzinfo is None:  # RFC 9110 dates are GMT
                return None
            seconds = when.timestamp() - wall
    else:
        return None
    if math.isnan(seconds):
        return None
    return max(0.0, seconds)


def retry_after_of(exc: BaseException, wall: float) -> float | None:
    """Seconds the service asked us to wait, from ``.retry_after`` or a Retry-After header.

    Accepts a number of seconds or an HTTP date (RFC 9110), found on the error itself, on
    ``exc.headers`` or on ``exc.response.headers`` (httpx, aiohttp, requests shapes).
    `wall` is the current epoch time, to turn a date into seconds.
    """
    value = getattr(exc, "retry_after", None)
    if value is not None:
        return _parse_retry_after(value, wall)
    for holder in (exc, getattr(exc, "response", None)):
        headers = getattr(holder, "headers", None)
        if headers is None:
            continue
        try:
            raw = headers.get("Retry-After") or headers.get("retry-after")
        except (AttributeError, TypeError):
            continue
        if raw is not None:
            return _parse_retry_after(raw, wall)
    return None


@dataclass(frozen=True, slots=True)
class RetryInfo:
    """The tag a `Retry` puts on an error it retried and then let through."""

    policy: str
    """Name of the retry policy."""
    attempts: int
    """Attempts made."""
    reason: str
    """Why retrying stopped: ``attempts``, ``deadline``, ``budget`` or ``not_retryable``."""
    retry_after: float | None
    """Seconds the service asked to wait, if it did (for a pause or a fallback)."""


_TAG = "_firebreak_retry"


def tag(exc: BaseException, info: RetryInfo) -> None:
    """Mark `exc` as already retried so outer layers do not multiply the load."""
    with contextlib.suppress(AttributeError):  # a type with __slots__ and no __dict__
        setattr(exc, _TAG, info)


def retry_info(exc: BaseException) -> RetryInfo | None:
    """The `RetryInfo` of an error a `Retry` already retried, else ``None``."""
    info = getattr(exc, _TAG, None)
    return info if isinstance(info, RetryInfo) else None
