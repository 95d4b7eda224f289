"""One process of the shared-breaker test: calls a fake service through a Redis breaker.

argv: redis URL, key prefix. The service is a Redis counter (``<prefix>:svc:calls``)
that fails while ``<prefix>:svc:healthy`` is not ``1``. The parent drives the phases
over stdin/stdout: trip, one call at a given instant, then a few calls once closed.
"""

from __future__ import annotations

import asyncio
import sys
import time

import redis.asyncio as aioredis

from firebreak.errors import CircuitOpenError
from firebreak.resilience.breaker import BreakerRegistry
from firebreak.resilience.breaker_state import BreakerPolicy
from firebreak.resilience.redis_breaker import RedisBreakerStore

POLICY = BreakerPolicy(
    minimum_calls=10, failure_rate=0.5, open_duration=1.0, open_jitter=0.0, half_open_probes=2
)


# A probe answers slowly: the other processes' calls of the same instant arrive while both
# probes are in flight (a process that starts late on a busy machine would otherwise find
# the breaker closed again by fast probes, and pass).
PROBE_TIME = 0.5


async def main(url: str, prefix: str) -> None:
    service = aioredis.Redis.from_url(url)
    slow = False

    async def call() -> str:
        await service.incr(f"{prefix}:svc:calls")
        if await service.get(f"{prefix}:svc:healthy") != b"1":
            raise ConnectionError("service down")
        if slow:
            await asyncio.sleep(PROBE_TIME)
        return "ok"

    async def attempt() -> str:
        try:
            return await breaker.call(call)
        except CircuitOpenError:
            return "rejected"
        except ConnectionError:
            return "failed"

    loop = asyncio.get_running_loop()

    async def line() -> str:
        return (await loop.run_in_executor(None, sys.stdin.readline)).strip()

    async with RedisBreakerStore(url, prefix=prefix) as store:
        breaker = BreakerRegistry(policy=POLICY, store=store).get("svc")
        for _ in range(500):  # phase 1: call the failing service until the breaker opens
            if await attempt() == "rejected":
                break
            await asyncio.sleep(0.002)
        print("tripped", flush=True)  # noqa: T201  -- stdout is the protocol
        at = float(await line())  # phase 2: one call each, all at the same instant
        await asyncio.sleep(max(0.0, at - time.time()))
        slow = True
        print(f"probe {await attempt()}", flush=True)  # noqa: T201
        slow = False
        await line()  # phase 3: closed again, every call goes through
        outcomes = [await attempt() for _ in range(5)]
        print("after " + ",".join(outcomes), flush=True)  # noqa: T201
    await service.aclose()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
