"""Fixtures of the store conformance suite (the backends live in ``store_backends``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from store_backends import store_factory

from firebreak.testing import StoreFactory


@pytest.fixture
def make_factory(tmp_path: Path) -> Callable[[str], StoreFactory]:
    """Call it inside the test, so an unreachable server in CI is a failure, not an error."""
    return lambda backend: store_factory(backend, tmp_path)
