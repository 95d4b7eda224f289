"""Markers a workflow's author puts on agent functions so the checks need not guess.

>>> from firebreak.analysis import calls_service, moves_money
>>> @calls_service("tax-api")
... async def validate(ctx, extract): ...
>>> service_of(validate)
'tax-api'
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["calls_service", "is_payment", "moves_money", "service_of"]

_F = TypeVar("_F", bound=Callable[..., object])
_SERVICE = "__firebreak_service__"
_PAYMENT = "__firebreak_payment__"


def calls_service(service: str) -> Callable[[_F], _F]:
    """Mark an agent function as calling the external service `service` (see FB001)."""
    if not isinstance(service, str) or not service:
        raise ValueError(f"calls_service needs a service name, got {service!r}")

    def mark(fn: _F) -> _F:
        setattr(fn, _SERVICE, service)
        return fn

    return mark


def moves_money(fn: _F, /) -> _F:
    """Mark an agent function as moving money: retried at most twice (see FB012)."""
    setattr(fn, _PAYMENT, True)
    return fn


def service_of(fn: object) -> str | None:
    """The service `calls_service` marked `fn` with, or ``None``."""
    value = getattr(fn, _SERVICE, None)
    return value if isinstance(value, str) else None


def is_payment(fn: object) -> bool:
    """Whether `moves_money` marked `fn`."""
    return getattr(fn, _PAYMENT, False) is True
