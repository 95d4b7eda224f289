"""A retry budget per service: what stops retry storms during an outage."""

from __future__ import annotations

from firebreak.clock import Clock, system_clock
from firebreak.errors import ConfigError
from firebreak.events import BudgetExhausted, emit

__all__ = ["RetryBudget"]


class RetryBudget:
    """A token bucket that lets retries add at most `ratio` to a service's request rate.

    Every first attempt deposits `ratio` tokens, time adds `min_per_second` tokens a
    second (a floor so a quiet service can still retry), and every retry takes one. With
    no token left the retry is refused at once and a `BudgetExhausted` event is emitted
    (Finagle's and Envoy's retry budgets). Share one budget among all callers of a
    service; it is not thread-safe, like the rest of asyncio.

    >>> budget = RetryBudget("ocr-api", ratio=0.2, min_per_second=10)
    """

    __slots__ = ("_balance", "_clock", "_last", "capacity", "min_per_second", "name", "ratio")

    def __init__(
        self,
        name: str,
        *,
        ratio: float = 0.2,
        min_per_second: float = 10.0,
        capacity: float | None = None,
        clock: Clock = system_clock,
    ) -> None:
        if not 0 <= ratio <= 1:
            raise ConfigError("ratio", f"must be within 0..1, got {ratio!r}")
        if min_per_second < 0:
            raise ConfigError("min_per_second", f"must be >= 0, got {min_per_second!r}")
        if capacity is None:
            # Ten seconds of the floor: enough for a burst, bounded during an outage.
            capacity = max(10 * min_per_second, 1.0)
        if capacity < 1:
            raise ConfigError("capacity", f"must be >= 1 token, got {capacity!r}")
        self.name = name
        self.ratio = ratio
        self.min_per_second = min_per_second
        self.capacity = capacity
        self._clock = clock
        self._balance = min(capacity, max(min_per_second, 1.0))
        self._last = clock.now()

    def __repr__(self) -> str:
        return f"RetryBudget({self.name!r}, ratio={self.ratio}, balance={self._balance:.1f})"

    def _refill(self) -> None:
        now = self._clock.now()
        self._balance = min(self.capacity, self._balance + (now - self._last) * self.min_per_second)
        self._last = now

    @property
    def balance(self) -> float:
        """Tokens available now (one retry costs one)."""
        self._refill()
        return self._balance

    def deposit(self) -> None:
        """Record a first attempt: it earns `ratio` of a retry."""
        balance = self._balance + self.ratio
        self._balance = balance if balance < self.capacity else self.capacity

    def withdraw(self) -> bool:
        """Take a token for one retry; ``False`` (and an event) when the budget is spent."""
        self._refill()
        if self._balance >= 1:
            self._balance -= 1
            return True
        emit(BudgetExhausted(source=self.name))
        return False
