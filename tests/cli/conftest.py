"""Fixtures of the CLI tests: a store per test and a runner that always passes it."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import Invoke
from typer.testing import CliRunner, Result

from firebreak.cli import app
from firebreak.store import open_store


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI puts the current directory on sys.path and reads $FIREBREAK_STORE: undo both."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.delenv("FIREBREAK_STORE", raising=False)
    for name in ("FIREBREAK_TEST_CARD_DECLINED", "FIREBREAK_TEST_LOOKUP_DOWN"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/x.db"


@pytest.fixture
def write_json(tmp_path: Path) -> Callable[[str, Any], str]:
    """Write a JSON file under tmp_path; return its path as the CLI takes it."""

    def write(name: str, value: Any) -> str:
        path = tmp_path / name
        path.write_text(json.dumps(value), encoding="utf-8")
        return str(path)

    return write


@pytest.fixture
def fb(store_url: str) -> Invoke:
    """``fb("run", "cli_workflows:ok", ...)``: invoke the CLI against this test's store."""
    runner = CliRunner()

    def invoke(
        *args: str,
        env: Mapping[str, str | None] | None = None,
        store: bool = True,
        stdin: str | None = None,
    ) -> Result:
        argv = [*args, "--store", store_url] if store else list(args)
        return runner.invoke(app, argv, input=stdin, env=env, catch_exceptions=False)

    return invoke


@pytest.fixture
def existing_store(store_url: str) -> str:
    """The test's store, made (empty): commands that only read refuse a missing one."""

    async def make() -> None:
        async with open_store(store_url):
            pass

    asyncio.run(make())
    return store_url
