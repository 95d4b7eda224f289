"""Shared fixtures: a virtual clock so no test sleeps for real."""

from __future__ import annotations

import random

import pytest

from firebreak.testing import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261125)
