"""A faster ``__init__`` for the frozen, slotted dataclasses made on every step.

A frozen dataclass sets each field with ``object.__setattr__`` looked up and called per
field: about 1.3 µs for a nine-field record, more than the rest of a step's bookkeeping.
`fast_init` compiles an equivalent ``__init__`` (same keyword-only signature, defaults,
default factories and ``__post_init__``) that turns the new instance into its `twin`,
a plain class of the same slots, sets each field by a plain store and gives the instance
its class back. The class stays frozen.

`fast_new` goes further for the engine's own hot path: a positional constructor that
skips ``__init__`` and ``__post_init__``. Matching keyword arguments by name is most of the
cost of a constructor called with many of them (a 9-field `StepCall`: 750 ns by keyword,
220 ns positionally; a 9-field frozen `StepRecord`: 490 ns with a descriptor call per
field, 210 ns built as its twin).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

__all__ = ["fast_init", "fast_new", "twin"]

_T = TypeVar("_T")


class _Factory:
    """Marks a parameter whose default comes from a ``default_factory``."""

    def __repr__(self) -> str:
        return "<factory>"


_FACTORY: Any = _Factory()


def _compiled(cls: type[Any], scope: dict[str, Any]) -> tuple[list[str], list[str], list[str]]:
    """The parameters, the default-factory lines and the field names of `cls`.

    A parameter defaults to its field's default, or to `_FACTORY`, replaced by a call of
    the field's default factory.
    """
    args, factories, names = [], [], []
    for i, field in enumerate(dataclasses.fields(cls)):
        name = field.name
        names.append(name)
        if field.default is not dataclasses.MISSING:
            scope[f"_default{i}"] = field.default
            args.append(f"{name}=_default{i}")
        elif field.default_factory is not dataclasses.MISSING:
            scope[f"_factory{i}"] = field.default_factory
            args.append(f"{name}=_FACTORY")
            factories.append(f"    if {name} is _FACTORY: {name} = _factory{i}()")
        else:
            args.append(name)
    return args, factories, names


_TWINS: dict[type[Any], type[Any]] = {}


def twin(cls: type[Any]) -> type[Any]:
    """A plain class with the slots of `cls`: an instance built as one becomes a `cls`.

    Its fields are set by plain stores (a frozen class refuses them), then
    ``obj.__class__ = cls``: CPython allows that between classes of one layout (same
    base, same slots), which is checked here once rather than on a hot path.
    """
    made = _TWINS.get(cls)
    if made is not None:
        return made
    slots = cls.__dict__.get("__slots__")
    if slots is None or cls.__bases__ != (object,):
        raise TypeError(f"{cls.__name__}: a twin wants a slotted class on `object`")
    double: type[Any] = type(f"_{cls.__name__}Twin", (), {"__slots__": tuple(slots)})
    probe = object.__new__(double)
    probe.__class__ = cls  # raises TypeError here, at import, if the layouts differ
    _TWINS[cls] = double
    return double


def fast_init(cls: type[_T]) -> type[_T]:
    """Replace the ``__init__`` of a frozen, slotted, keyword-only dataclass."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_init wants a frozen dataclass with slots")
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not field.init or not field.kw_only:
            raise TypeError(f"{cls.__name__}.{field.name}: fast_init wants keyword-only fields")
    scope: dict[str, Any] = {"_FACTORY": _FACTORY, "_cls": cls, "_twin": twin(cls)}
    scope["_setattr"] = object.__setattr__  # what a frozen dataclass's own __init__ calls
    args, body, names = _compiled(cls, scope)
    # A subclass may have other slots: its instances are set field by field, as before.
    body.append("    if type(self) is _cls:")
    body.append("        _setattr(self, '__class__', _twin)")
    body += [f"        self.{name} = {name}" for name in names]
    body.append("        self.__class__ = _cls")
    body.append("    else:")
    body += [f"        _setattr(self, {name!r}, {name})" for name in names]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = "\n".join([f"def __init__(self, *, {', '.join(args)}) -> None:", *body])
    exec(source, scope)  # noqa: S102 - our own code, from the class's own field names
    init = scope["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[method-assign]
    return cls


def fast_new(cls: type[_T], order: str) -> Callable[..., _T]:
    """A positional constructor of a slotted dataclass, for trusted callers on a hot path.

    It takes every field in declaration order (trailing ones may be left to their
    defaults), sets them as they are and runs neither ``__init__`` nor ``__post_init__``:
    the caller passes values the class would accept unchanged. Keyword-only classes keep
    their public signature; only code of this package calls the result.

    `order` names the fields, space-separated, as the caller passes them: a class whose
    fields are reordered, added or renamed fails here, at import, instead of receiving
    values in the wrong fields.
    """
    if not dataclasses.is_dataclass(cls) or "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__}: fast_new wants a dataclass with slots")
    names = " ".join(f.name for f in dataclasses.fields(cls))
    if order.split() != names.split():
        raise TypeError(f"{cls.__name__}: fields are {names!r}, the caller expects {order!r}")
    frozen = cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    scope: dict[str, Any] = {"_new": object.__new__, "_cls": cls, "_FACTORY": _FACTORY}
    scope["_made"] = twin(cls) if frozen else cls
    args, body, fields = _compiled(cls, scope)
    body.append("    self = _new(_made)")
    body += [f"    self.{name} = {name}" for name in fields]
    if frozen:
        body.append("    self.__class__ = _cls")
    body.append("    return self")
    source = "\n".join([f"def new({', '.join(args)}):", *body])
    exec(source, scope)  # noqa: S102 - our own code, from the class's own field names
    new: Callable[..., _T] = scope["new"]
    new.__qualname__ = new.__name__ = f"new_{cls.__name__}"
    new.__module__ = cls.__module__
    return new
