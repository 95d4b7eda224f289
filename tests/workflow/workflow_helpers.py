"""Shared helpers for the workflow-definition tests (a unique name: no conftest clash)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from firebreak.errors import DefinitionError


@contextlib.contextmanager
def raises_for(agent: str | None, *fragments: str) -> Iterator[None]:
    """Expect a DefinitionError about `agent`, naming it, whose message has every fragment."""
    with pytest.raises(DefinitionError) as info:
        yield
    err = info.value
    assert err.agent == agent
    if agent is not None:
        assert repr(agent) in str(err)
    for fragment in fragments:
        assert fragment in str(err), (fragment, str(err))
