"""Fixtures of the observability tests: a hub that is left as it was found."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from firebreak.events import hub


@pytest.fixture(autouse=True)
def no_leftover_subscribers() -> Iterator[None]:
    """Every subscriber a test installs must be closed by it: a leak would count twice."""
    before = hub._handlers
    yield
    assert hub._handlers == before, "a test left a subscriber on the event hub"
