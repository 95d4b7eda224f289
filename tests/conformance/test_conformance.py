"""The store contract (`firebreak.testing.CHECKS`) on every backend, one test per check."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from store_backends import BACKENDS

from firebreak.testing import CHECKS, Check, CheckSkipped, StoreFactory, conformance_env

CASES = [
    pytest.param(backend, check, id=f"{backend}-{check.__name__}")
    for backend in BACKENDS
    for check in CHECKS
]


@pytest.mark.parametrize(("backend", "check"), CASES)
async def test_store_contract(
    backend: str, check: Check, make_factory: Callable[[str], StoreFactory]
) -> None:
    factory = make_factory(backend)  # skips, or fails in CI, if the backend cannot run
    async with conformance_env(factory) as env:
        try:
            await check(env)
        except CheckSkipped as skip:
            pytest.skip(f"{backend}: {skip}")
