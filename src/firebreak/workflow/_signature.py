"""Checks of the callables an agent is made of, against the parameter convention.

The convention (see `firebreak.workflow` for the user-facing description):

* the first parameter is the context, passed positionally, under any name;
* a root agent (no ``after=``) takes exactly one more parameter, any name: the run input;
* an agent with dependencies takes one parameter per dependency, named exactly as the
  dependency, and may take one more named ``input`` for the run input;
* every parameter after the context is passed by keyword (so it may be keyword-only but
  not positional-only), and ``*args``/``**kwargs`` are refused because parameters are
  matched to dependencies by name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from firebreak.errors import DefinitionError

__all__ = [
    "INPUT",
    "agent_params",
    "check_async",
    "check_compensate",
    "check_validator",
    "is_async",
]

INPUT = "input"
"""The reserved parameter name under which a non-root agent receives the run input."""

_P = inspect.Parameter


def _fail(agent: str, message: str) -> DefinitionError:
    return DefinitionError(f"agent {agent!r}: {message}", agent=agent)


def _describe(fn: object) -> str:
    return getattr(fn, "__qualname__", None) or repr(fn)


def is_async(fn: object) -> bool:
    """Whether calling `fn` returns a coroutine (async def, or an object with one as __call__)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def check_async(fn: object, *, agent: str, role: str) -> Callable[..., Any]:
    """Refuse anything that is not an async callable (the engine awaits every step)."""
    if not callable(fn):
        raise _fail(agent, f"{role} must be an async callable, got {fn!r}")
    if not is_async(fn):
        what = "the function" if role == "agent" else f"{role} {_describe(fn)}"  # named once
        raise _fail(agent, f"{what} must be declared with 'async def', not 'def'")
    return fn


def _signature(fn: Callable[..., Any], *, agent: str, role: str) -> inspect.Signature:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError) as exc:
        raise _fail(agent, f"cannot read the signature of {role} {_describe(fn)}") from exc


def agent_params(
    fn: Callable[..., Any], *, agent: str, after: tuple[str, ...], role: str = "agent"
) -> tuple[tuple[str, ...], str | None]:
    """Check `fn` against the convention; return (dependency params, run-input param or None)."""
    params = list(_signature(fn, agent=agent, role=role).parameters.values())
    shown = f"{role} {_describe(fn)}"
    if any(p.kind in (_P.VAR_POSITIONAL, _P.VAR_KEYWORD) for p in params):
        raise _fail(agent, f"{shown} may not take *args or **kwargs: inputs are passed by name")
    if not params or params[0].kind not in (_P.POSITIONAL_ONLY, _P.POSITIONAL_OR_KEYWORD):
        raise _fail(agent, f"{shown} must take the context as its first positional parameter")
    rest = params[1:]
    if positional := [p.name for p in rest if p.kind is _P.POSITIONAL_ONLY]:
        raise _fail(agent, f"{shown}: parameters {positional} are passed by name, not position")
    names = [p.name for p in rest]
    if not after:
        if len(names) != 1:
            raise _fail(
                agent,
                f"{shown} is a root agent (no after=) and must take (ctx, run_input); "
                f"it takes {len(names)} parameters after the context: {names}",
            )
        return (), names[0]
    deps = tuple(n for n in names if n != INPUT)
    missing = [d for d in after if d not in deps]
    extra = [n for n in deps if n not in after]
    if missing or extra:
        problems = []
        if missing:
            problems.append(f"no parameter for dependencies {missing}")
        if extra:
            problems.append(f"parameters {extra} name no dependency in after={list(after)}")
        raise _fail(
            agent,
            f"{shown}: {'; '.join(problems)} (after the context, take one parameter per "
            f"dependency, named as it, and optionally {INPUT!r} for the run input)",
        )
    return deps, (INPUT if INPUT in names else None)


def check_compensate(fn: object, *, agent: str) -> None:
    """A compensation is an async callable taking (ctx, output)."""
    checked = check_async(fn, agent=agent, role="compensate")
    try:
        _signature(checked, agent=agent, role="compensate").bind(None, None)
    except TypeError as exc:
        raise _fail(agent, f"compensate {_describe(fn)} must accept (ctx, output)") from exc


def check_validator(fn: object, *, agent: str) -> None:
    """A validator is a class (e.g. a pydantic model) or a sync callable taking the output."""
    if isinstance(fn, type):
        return
    if not callable(fn):
        raise _fail(agent, f"validate must be a model class or a callable, got {fn!r}")
    if is_async(fn):
        raise _fail(agent, f"validate {_describe(fn)} must be synchronous: (output) -> output")
    try:
        _signature(fn, agent=agent, role="validate").bind(None)
    except TypeError as exc:
        raise _fail(
            agent, f"validate {_describe(fn)} must accept one argument: the output"
        ) from exc
