"""A flaky LLM service called naively and through a firebreak pipeline, on virtual time.

Both runs face the very same seeded faults (the fault of call *i* is drawn from the seed
and *i*, not from the order of events), so only the patterns differ. Time is virtual
(`FakeClock`): a 30 s hang costs nothing real, and the report gives simulated seconds.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass

from firebreak.errors import Transient
from firebreak.events import BreakerStateChanged, CallRejected, Event, RetryScheduled
from firebreak.resilience import Bulkhead, CircuitBreaker, Fallback, Pipeline, Retry, Timeout
from firebreak.testing import FakeClock, capture_events

__all__ = ["Report", "run_demo"]


class ServiceUnavailable(Transient):
    """HTTP 503 with a Retry-After, as an overloaded model API answers."""

    status_code = 503

    def __init__(self, retry_after: float) -> None:
        super().__init__("503 service unavailable", retry_after=retry_after)


@dataclass(frozen=True, slots=True)
class Report:
    """What one run of the demo did."""

    label: str
    requests: int
    answered: int
    from_fallback: int
    failed: int
    service_calls: int
    retries: int
    rejected_by_breaker: int
    breaker_trips: int
    simulated_seconds: float


class FlakyModel:
    """A model API with seeded faults: hangs, 503s, and a hard outage window."""

    def __init__(self, clock: FakeClock, seed: int, *, outage: tuple[float, float]) -> None:
        self.clock = clock
        self.seed = seed
        self.outage = outage
        self.calls = 0

    async def __call__(self, request: int, attempt_box: list[int]) -> str:
        attempt_box[0] += 1
        self.calls += 1
        # The fault depends only on (seed, request, attempt): identical in both runs.
        draw = random.Random(f"{self.seed}/{request}/{attempt_box[0]}").random()
        start, end = self.outage
        if start <= self.clock.now() < end:
            raise ConnectionError("connection refused")
        if draw < 0.10:
            await self.clock.sleep(30)  # a hung generation
        elif draw < 0.15:
            raise ServiceUnavailable(retry_after=2)
        await self.clock.sleep(0.8)
        return f"answer-{request}"


async def _run(label: str, requests: int, seed: int, *, protected: bool) -> Report:
    clock = FakeClock()
    model = FlakyModel(clock, seed, outage=(120.0, 180.0))
    answered = from_fallback = failed = 0

    async def cached(request: int, attempt_box: list[int]) -> str:  # noqa: ARG001 - same signature
        return f"cached-{request}"

    if protected:
        pipeline = Pipeline(
            fallback=Fallback(cached),
            bulkhead=Bulkhead("model", limit=8, clock=clock),
            timeout=45,
            retry=Retry(attempts=4, base=0.5, cap=8, clock=clock, rng=random.Random(seed)),
            breaker=CircuitBreaker(
                "model-api", clock=clock, rng=random.Random(seed), minimum_calls=10
            ),
            attempt_timeout=10,
            clock=clock,
        )
        call = pipeline.wrap(model)
    else:
        call = Timeout(60, clock=clock)(model)

    async def one(request: int) -> None:
        nonlocal answered, from_fallback, failed
        try:
            answer = await call(request, [0])
        except Exception:  # noqa: BLE001 - the demo counts every failure alike
            failed += 1
            return
        answered += 1
        from_fallback += answer.startswith("cached")

    seen: list[Event]
    with capture_events() as seen:
        tasks = []
        for request in range(requests):
            tasks.append(asyncio.create_task(one(request)))
            await clock.sleep(1)  # one request per simulated second
        await asyncio.gather(*tasks)
    return Report(
        label=label,
        requests=requests,
        answered=answered,
        from_fallback=from_fallback,
        failed=failed,
        service_calls=model.calls,
        retries=sum(isinstance(e, RetryScheduled) for e in seen),
        rejected_by_breaker=sum(isinstance(e, CallRejected) and e.kind == "breaker" for e in seen),
        breaker_trips=sum(isinstance(e, BreakerStateChanged) and e.new == "open" for e in seen),
        simulated_seconds=clock.now(),
    )


def run_demo(requests: int = 300, seed: int = 7) -> tuple[Report, Report]:
    """Run the naive and the protected variant against the same faults."""
    naive = asyncio.run(_run("naive", requests, seed, protected=False))
    safe = asyncio.run(_run("firebreak", requests, seed, protected=True))
    return naive, safe
