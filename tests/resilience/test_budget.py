from __future__ import annotations

import pytest

import firebreak as fb
from firebreak.testing import FakeClock


def test_retries_are_limited_to_the_ratio_of_requests(clock: FakeClock) -> None:
    budget = fb.RetryBudget("svc", ratio=0.2, min_per_second=0, capacity=1000, clock=clock)
    budget.withdraw()  # spend the starting token
    for _ in range(100):
        budget.deposit()
    granted = sum(budget.withdraw() for _ in range(100))
    assert 19 <= granted <= 20  # 100 deposits of 0.2 (float sums may fall just short)


def test_the_floor_refills_over_time(clock: FakeClock) -> None:
    budget = fb.RetryBudget("svc", ratio=0, min_per_second=10, clock=clock)
    while budget.withdraw():
        pass
    clock.advance(1)
    assert sum(budget.withdraw() for _ in range(50)) == 10


def test_balance_is_capped(clock: FakeClock) -> None:
    budget = fb.RetryBudget("svc", min_per_second=10, capacity=30, clock=clock)
    clock.advance(3600)
    assert budget.balance == 30


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"ratio": 1.5}, "ratio"),
        ({"min_per_second": -1}, "min_per_second"),
        ({"capacity": 0.5}, "capacity"),
    ],
)
def test_bad_configuration_names_the_field(options: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        fb.RetryBudget("svc", **options)
