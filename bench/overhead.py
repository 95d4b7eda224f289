"""Per-call overhead of a successful async call through firebreak and its peers.

Each variant awaits a trivial coroutine N times inside one event loop; the bare await is
measured in the same run and subtracted, so figures are overhead per call. Best of R
repeats (the least disturbed). Run: ``make bench`` or ``python bench/overhead.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import platform
import time
import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import pybreaker
import stamina
import tenacity

import firebreak as fb


async def work(x: int) -> int:
    return x


async def measure(fn: Callable[[int], Awaitable[Any]], n: int, repeats: int) -> float:
    """Best seconds per call over `repeats` loops of `n` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(n):
            await fn(i)
        best = min(best, (time.perf_counter() - start) / n)
    return best


def variants() -> dict[str, Callable[[int], Awaitable[Any]]]:
    stamina.set_testing(False)
    return {
        "bare await": work,
        "firebreak Retry": fb.Retry(attempts=3)(work),
        "firebreak CircuitBreaker (closed)": fb.CircuitBreaker("bench")(work),
        "firebreak Pipeline (all layers)": fb.Pipeline(
            fallback=fb.Fallback(work),
            bulkhead=fb.Bulkhead("bench", limit=100),
            timeout=60,
            retry=fb.Retry(attempts=3),
            breaker=fb.CircuitBreaker("bench-pipeline"),
            attempt_timeout=30,
        )(work),
        "stamina @retry": stamina.retry(on=TimeoutError, attempts=3)(work),
        "tenacity @retry": tenacity.retry(
            stop=tenacity.stop_after_attempt(3),
            wait=tenacity.wait_random_exponential(multiplier=1, max=60),
            retry=tenacity.retry_if_exception_type(TimeoutError),
        )(work),
    }


def pybreaker_wraps_coroutines() -> str:
    """Check, live, what pybreaker does with an async function."""
    breaker = pybreaker.CircuitBreaker(fail_max=1)

    async def boom() -> None:
        raise TimeoutError

    result = breaker(boom)()
    unawaited = inspect.iscoroutine(result)
    if unawaited:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result.close()
    return (
        f"returns the coroutine unawaited ({unawaited}) and records "
        f"{breaker.fail_counter} failures for a call that would fail: it cannot wrap a coroutine"
    )


async def main(n: int, repeats: int) -> None:
    results: dict[str, float] = {}
    for name, fn in variants().items():
        await measure(fn, n // 10, 1)  # warm up
        results[name] = await measure(fn, n, repeats)
    bare = results["bare await"]
    print(f"python {platform.python_version()} on {platform.machine()}, n={n}, best of {repeats}")
    print(f"{'variant':38} {'per call':>10} {'overhead':>10}")
    for name, seconds in results.items():
        print(f"{name:38} {seconds * 1e6:8.2f}µs {(seconds - bare) * 1e6:8.2f}µs")
    print()
    for ours in ("firebreak Retry", "firebreak Pipeline (all layers)"):
        for peer in ("stamina @retry", "tenacity @retry"):
            ratio = (results[peer] - bare) / max(results[ours] - bare, 1e-9)
            print(f"{peer} overhead / {ours} overhead: {ratio:5.1f}x")
    print(f"pybreaker: {pybreaker_wraps_coroutines()}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=50_000, help="calls per repeat")
    parser.add_argument("-r", "--repeats", type=int, default=5)
    args = parser.parse_args()
    asyncio.run(main(args.n, args.repeats))
