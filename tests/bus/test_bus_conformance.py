"""Every bus backend passes the one conformance suite (`firebreak.bus.conformance`)."""

from __future__ import annotations

import pytest

from firebreak.bus.conformance import CHECKS, BusFactory, Check


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__)
async def test_bus_conformance(make_bus: BusFactory, check: Check) -> None:
    """The backend behaves as the `TaskBus` protocol promises (see each check's docstring)."""
    await check(make_bus)
