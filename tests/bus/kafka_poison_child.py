"""A consumer process that dies (SIGKILL, by itself) holding what it took and did not ack.

Usage: ``python kafka_poison_child.py BUS_URL QUEUE [TAKE [ACK]]``: takes TAKE tasks
(default 1, held at once), acks those whose body ``n`` is listed in ACK
(comma-separated, or ``all``; default none), then kills itself if it still holds any, or
closes. Prints ``took N COUNT`` per task taken (N: its body's ``n``, COUNT: its delivery
count), ``dead N COUNT`` for a task handed to it as a dead letter, ``none`` if nothing
came within the wait.
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


async def main(url: str, queue: str, take: int, ack: str) -> None:
    async with from_url(url) as bus:
        consumer = bus.consumer(
            [queue], group="poison", name=f"child-{os.getpid()}", max_in_flight=take
        )
        held = []
        for _ in range(take):
            delivery = await consumer.get(20.0)
            if delivery is None:
                _say("none")
                break
            n = delivery.body.get("n")
            if delivery.dead:
                _say(f"dead {n} {delivery.deliveries}")
                continue
            _say(f"took {n} {delivery.deliveries}")
            if ack == "all" or str(n) in ack.split(","):
                await consumer.ack(delivery)
            else:
                held.append(delivery)
        if held:
            os.kill(os.getpid(), signal.SIGKILL)  # the poison: it dies holding them
        await consumer.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], args[1], int(args[2]) if len(args) > 2 else 1, "".join(args[3:4])))
