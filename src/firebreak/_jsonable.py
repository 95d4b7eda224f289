"""Plain JSON data from what agents return: the one form every store can keep.

Below the workflow and the engine, so that a definition can refuse a ``default=`` no
checkpoint could hold, as a step refuses such an output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeGuard

from firebreak.errors import Permanent

if TYPE_CHECKING:
    from firebreak.store.base import JSON

__all__ = ["NotStorable", "encode", "is_model", "summary", "text"]


class NotStorable(Permanent):
    """A value cannot be checkpointed as JSON."""


def encode(value: Any, *, what: str) -> JSON:
    """`value` as plain JSON data: pydantic models and dataclasses are dumped.

    Raises:
        NotStorable: something in `value` has no JSON form.
    """
    if isinstance(value, str):
        return text(value, what)
    finite = isinstance(value, float) and math.isfinite(value)
    if value is None or isinstance(value, bool | int) or finite:
        return value
    if isinstance(value, float):
        raise NotStorable(f"{what}: {value!r} is not a JSON number")
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotStorable(f"{what}: dict keys must be strings, got {key!r}")
            out[text(key, what)] = encode(item, what=what)
        return out
    if isinstance(value, list | tuple):
        return [encode(item, what=what) for item in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):  # pydantic v2 model; walked too: its JSON mode keeps NaN and inf
        return encode(dump(mode="json"), what=what)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return encode(dataclasses.asdict(value), what=what)
    raise NotStorable(
        f"{what}: {type(value).__name__!r} values cannot be checkpointed (only JSON data, "
        "dataclasses and pydantic models can)"
    )


def text(value: str, what: str) -> str:
    r"""`value` if every store can keep it: UTF-8 text (a lone surrogate is not).

    A lone surrogate (``"\ud800"``: text decoded with ``surrogateescape``, or cut in the
    middle of a pair) passes the JSON encoder, then fails every store's write. ASCII text,
    the usual case, is known to be fine at once (`str.isascii` reads a flag).
    """
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise NotStorable(
                f"{what}: text with a lone surrogate at index {exc.start} is not UTF-8 "
                "and cannot be checkpointed"
            ) from None
    return value


def is_model(schema: object) -> TypeGuard[type[Any]]:
    """Whether `schema` is a pydantic model class (no import of pydantic needed)."""
    return isinstance(schema, type) and hasattr(schema, "model_validate")


_SHOWN_ERRORS = 5


def summary(exc: BaseException) -> str:
    """One line saying why a value failed validation.

    A pydantic error lists every field with its complaint (its text puts them on lines of
    their own, so its first line alone, "2 validation errors for Invoice", said nothing
    of which); any other error gives its first line, or its type.
    """
    errors = getattr(exc, "errors", None)
    title = getattr(exc, "title", None)
    if callable(errors) and isinstance(title, str):
        found = errors(include_url=False)
        parts = [
            f"{'.'.join(str(part) for part in error['loc']) or 'value'}: {error['msg']}"
            for error in found[:_SHOWN_ERRORS]
        ]
        if len(found) > _SHOWN_ERRORS:
            parts.append(f"and {len(found) - _SHOWN_ERRORS} more")
        noun = "error" if len(found) == 1 else "errors"
        return f"{len(found)} validation {noun} for {title}: {'; '.join(parts)}"
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
