"""What commands read: a workflow named ``MODULE:WORKFLOW`` and JSON files."""

from __future__ import annotations

import importlib
import json
import sys
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from firebreak.errors import FirebreakError
from firebreak.workflow import Workflow

from .exits import CliError, _first_line

__all__ = ["import_ref", "load_workflow", "load_workflows", "read_json"]

_EXAMPLE = "e.g. myapp.flows:invoice"


def _importable_from_cwd() -> None:
    """Put the current directory first on ``sys.path``, as ``python -m`` and uvicorn do."""
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)


def import_ref(ref: str, kinds: tuple[type, ...], example: str = _EXAMPLE) -> Any:
    """Import the object that ``MODULE:ATTR`` names (``ATTR`` may be dotted).

    A missing attribute's error lists what the module defines of `kinds`, as a hint.

    Raises:
        CliError: a malformed reference or a file path, a missing module or attribute,
            or an error while importing (its traceback printed first, unless it is a
            `FirebreakError`: an invalid definition).
    """
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name or not attr:
        raise CliError(f"{ref!r} is not MODULE:{kinds[0].__name__.upper()} ({example})")
    if module_name.endswith(".py") or "/" in module_name or "\\" in module_name:
        dotted = ".".join(Path(module_name.removesuffix(".py")).parts).lstrip(".")
        raise CliError(
            f"{ref!r} names a file, not a module: write {dotted}:{attr} and run firebreak "
            "from the directory the module path starts in"
        )
    _importable_from_cwd()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and (module_name == missing or module_name.startswith(f"{missing}.")):
            raise CliError(
                f"cannot import {module_name!r}: no module named {missing!r} "
                f"(run firebreak from the directory that holds it, or install it)"
            ) from None
        _show_traceback()
        raise CliError(f"cannot import {module_name!r}: {_named(exc)}") from None
    except FirebreakError as exc:
        raise CliError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - the module's bug: its traceback, one line, exit 2
        _show_traceback()
        raise CliError(f"cannot import {module_name!r}: {_named(exc)}") from None
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            found = sorted(k for k, v in vars(module).items() if isinstance(v, kinds))
            hint = f"; it defines {', '.join(found)}" if found else ""
            raise CliError(f"module {module_name!r} has no attribute {attr!r}{hint}") from None
    return obj


def _show_traceback() -> None:
    traceback.print_exc(file=sys.stderr)


def _named(exc: BaseException) -> str:
    first = _first_line(str(exc))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def load_workflow(ref: str) -> Workflow:
    """Import the `Workflow` that ``MODULE:ATTR`` names (``ATTR`` may be dotted).

    The current directory is importable. A missing module or attribute, an object that
    is not a `Workflow`, or an error while importing is a `CliError` (exit 2); an error
    inside the module other than an invalid definition prints its traceback first.

    Raises:
        CliError: the reference does not name a workflow.
    """
    obj = import_ref(ref, (Workflow,))
    if not isinstance(obj, Workflow):
        raise CliError(f"{ref!r} is not a firebreak.Workflow (got a {type(obj).__name__})")
    return obj


def load_workflows(refs: Iterable[str]) -> dict[str, Workflow]:
    """Import several workflows, keyed by their names (a name given twice is a `CliError`)."""
    by_name: dict[str, Workflow] = {}
    for ref in refs:
        workflow = load_workflow(ref)
        other = by_name.setdefault(workflow.name, workflow)
        if other is not workflow:
            raise CliError(f"two --workflow options define a workflow named {workflow.name!r}")
    return by_name


def read_json(path: Path) -> Any:
    """Read a JSON document from `path` (``-``: standard input).

    Raises:
        CliError: the file is missing or unreadable, or is not valid JSON.
    """
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"{path}: cannot read: {reason}") from None
    try:
        return json.loads(text, parse_constant=_not_json)
    except json.JSONDecodeError as exc:
        raise CliError(
            f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:
        raise CliError(f"{path}: not valid JSON: {exc}") from None


def _not_json(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON has not: no store could keep them.
    raise ValueError(f"{name} is not a JSON value")
