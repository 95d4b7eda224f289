"""A consumer process that dies (SIGKILL, by itself) holding the first task it takes.

Usage: ``python kafka_poison_child.py BUS_URL QUEUE``. Prints ``took N`` (N: the delivery
count) before it kills itself, ``dead N`` if the bus hands it the task as a dead letter
instead, ``none`` if nothing came within the wait.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

from firebreak.bus.kafka import from_url


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def main(url: str, queue: str) -> None:
    async with from_url(url) as bus:
        consumer = bus.consumer([queue], group="poison", name=f"child-{os.getpid()}")
        delivery = await consumer.get(20.0)
        if delivery is None:
            _say("none")
        elif delivery.dead:
            _say(f"dead {delivery.deliveries}")
        else:
            _say(f"took {delivery.deliveries}")
            os.kill(os.getpid(), signal.SIGKILL)  # the poison: the process dies holding it
        await consumer.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
