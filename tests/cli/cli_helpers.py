"""Helpers of the CLI tests (importable by name: pytest puts this directory on sys.path)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from typer.testing import Result

Invoke = Callable[..., Result]
"""``fb("run", "cli_workflows:ok", ..., env=None, store=True, stdin=None)``: a CLI result."""


def out_json(result: Result) -> Any:
    """The JSON document a ``--json`` command printed (stdout holds nothing else)."""
    return json.loads(result.stdout)
