"""A faster ``__init__`` for the frozen, slotted dataclasses made on every step.

A frozen dataclass sets each field with ``object.__setattr__`` looked up and called per
field: about 1.3 µs for a nine-field record, more than the rest of a step's bookkeeping.
`fast_init` compiles an equivalent ``__init__`` (same keyword-only signature, defaults,
default factories and ``__post_init__``) that sets each field through its slot
descriptor, bound once: about a third of the cost. The class stays frozen.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

__all__ = ["fast_init"]

_T = TypeVar("_T")


class _Factory:
    """Marks a parameter whose default comes from a ``default_factory``."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY: Any = _Factory()


def fast_init(cls: type[_T]) -> type[_T]:
    """Replace the ``__init__`` of a frozen, slotted, keyword-only dataclass."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init wants a frozen dataclass with slots")
    scope: dict[str, Any] = {"_FACTORY": _FACTORY}
    args, body = [], []
    for i, field in enumerate(dataclasses.fields(cls)):  # type: ignore[arg-type]
        if not field.init or not field.kw_only:
            raise TypeError(f"{cls.__name__}.{field.name}: fast_init wants keyword-only fields")
        name = field.name
        scope[f"_set{i}"] = cls.__dict__[name].__set__
        if field.default is not dataclasses.MISSING:
            scope[f"_default{i}"] = field.default
            args.append(f"{name}=_default{i}")
        elif field.default_factory is not dataclasses.MISSING:
            scope[f"_factory{i}"] = field.default_factory
            args.append(f"{name}=_FACTORY")
            body.append(f"    if {name} is _FACTORY: {name} = _factory{i}()")
        else:
            args.append(name)
        body.append(f"    _set{i}(self, {name})")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = "\n".join([f"def __init__(self, *, {', '.join(args)}) -> None:", *body])
    exec(source, scope)  # noqa: S102 - our own code, from the class's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls
