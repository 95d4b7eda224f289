"""Fixtures of the backend-specific store tests.

The store contract every backend shares lives in `firebreak.testing.CHECKS` and runs
on every backend in ``tests/conformance``; this directory keeps what only one backend
has (SQLite files, reopening, crashes) and `open_store` URL parsing.
"""

from __future__ import annotations

import pytest

from firebreak.testing import FakeClock


@pytest.fixture
def wall() -> FakeClock:
    """A clock moved by hand: lease expiry is tested without sleeping."""
    return FakeClock(autojump=False)
