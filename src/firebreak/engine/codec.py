"""Turning step outputs and errors into JSON for the store, and back.

A checkpoint is only worth something if it can be read back: an output that cannot be
stored fails loudly when the step commits, not silently at resume time.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from firebreak._jsonable import NotStorable, encode, is_model, summary
from firebreak.errors import FirebreakError, InvalidOutput
from firebreak.resilience.classify import retry_info
from firebreak.store import JSON
from firebreak.workflow import AgentSpec

__all__ = [
    "NotStorable",
    "decode_output",
    "encode",
    "encode_output",
    "error_to_dict",
    "is_model",
    "live_output",
    "summary",
    "validate_output",
]


_PLAIN = frozenset({int, str, bool, type(None)})


def encode_output(agent: str, value: Any, what: str = "output") -> JSON:
    """`encode` of an agent's output or default (`what`), named in the error if any.

    Plain values skip the walk, and the message is formatted only when it is needed: this
    runs for every step.
    """
    kind = type(value)
    if kind in _PLAIN and (kind is not str or value.isascii()):
        return value
    return encode(value, what=f"{what} of agent {agent!r}")


def apply_check(check: Callable[[Any], Any], value: Any) -> Any:
    """Run a callable validator on `value`: the value to keep, or `ValueError`.

    Raising or returning ``False`` rejects the value; ``True`` or ``None`` keeps it as it is
    (a predicate, or a check that only raises); anything else replaces it (a converter).
    """
    result = check(value)
    if result is None or result is True:
        return value
    if result is False:
        name = getattr(check, "__name__", "<lambda>")
        raise ValueError(f"{'the check' if name == '<lambda>' else name} returned False")
    return result


def validate_output(spec: AgentSpec, value: Any) -> Any:
    """Check an agent's output with its ``validate=``; raise `InvalidOutput` if it fails."""
    schema = spec.validate
    if schema is None:
        return value
    try:
        if is_model(schema):
            if isinstance(value, schema):
                return value
            return schema.model_validate(value)
        return apply_check(schema, value)
    except InvalidOutput:
        raise
    except Exception as exc:
        raise InvalidOutput(f"agent {spec.name!r}: {summary(exc)}") from exc


def decode_output(spec: AgentSpec, stored: JSON) -> Any:
    """Rebuild a checkpointed output: a pydantic model's instance, else the JSON value.

    A container comes back as a copy of its own: a dependent that changes its input in
    place must not change the run's recorded result, which holds `stored`.
    """
    schema = spec.validate
    if stored is not None and is_model(schema):
        return schema.model_validate(stored)
    if isinstance(stored, dict | list):
        return json.loads(json.dumps(stored))
    return stored


def live_output(spec: AgentSpec, output: Any, stored: JSON) -> Any:
    """What dependents get from a step that just committed: what a resume would give them.

    The agent's own value where reading the checkpoint back rebuilds its like (plain
    values; an instance of the model ``validate=`` names, which the output was checked
    into); else the checkpoint's JSON. So a model, a dataclass or a tuple returned with
    no model to rebuild it reaches dependents as JSON on every drive, not only on the
    drives after a crash.
    """
    if type(output) in _PLAIN or is_model(spec.validate):
        return output
    return decode_output(spec, stored)


def error_to_dict(exc: BaseException) -> dict[str, Any]:
    """A JSON record of an error: type, message, attributes, retry details."""
    out: dict[str, Any] = {
        "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "message": str(exc),
    }
    if isinstance(exc, FirebreakError):
        attrs = {}
        for key, value in exc._attrs.items():  # noqa: SLF001 - our own error tree
            try:
                attrs[key] = encode(value, what="error attribute")
            except NotStorable:
                attrs[key] = repr(value)
        out["attrs"] = attrs
    info = retry_info(exc)
    if info is not None:
        out["retry"] = {
            "policy": info.policy,
            "attempts": info.attempts,
            "reason": info.reason,
            "retry_after": info.retry_after,
        }
    cause = exc.__cause__
    if cause is not None and not isinstance(exc, InvalidOutput):
        out["cause"] = {"type": type(cause).__qualname__, "message": str(cause)}
    clean: dict[str, Any] = safe_text(out)
    return clean


def safe_text(value: Any) -> Any:
    r"""`value` with its strings made storable anywhere (NUL, lone surrogates).

    NUL becomes U+FFFD and a lone surrogate its escape (``\udcff``). Error text is
    whatever a service sent; PostgreSQL keeps no NUL in text or jsonb, no store keeps a
    lone surrogate (not UTF-8: an OS file name decoded with ``surrogateescape``, say), and
    a failure that cannot be recorded would leave its run stuck "running", never
    dead-lettered. Outputs keep theirs (stored as JSON text, they
    round-trip) or are refused (`_jsonable.text`).
    """
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "\ufffd")
        if not value.isascii():
            value = value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {safe_text(key): safe_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [safe_text(item) for item in value]
    return value
