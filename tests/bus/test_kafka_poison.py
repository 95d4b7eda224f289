"""A poison task on Kafka: every process that takes it dies (SIGKILL) while holding it.

Its count must survive the deaths: the bus logs each hand-out on the broker before the
work starts (`firebreak.bus._kafka_handouts`), because Tansu answers every OffsetFetch
without the commit metadata that could have carried it. Each child below takes the task
and kills itself; the one after ``max_deliveries`` is handed it as a dead letter.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from pathlib import Path

import kafka_backend
import pytest
from processes import Procs

from firebreak.bus.kafka import from_url

pytestmark = pytest.mark.slow

MAX_DELIVERIES = 2


def test_a_task_that_kills_every_worker_ends_in_the_dead_letters(tmp_path: Path) -> None:
    """Each taker is SIGKILLed holding it; the taker after max_deliveries gets it dead."""
    kafka_backend.require()
    prefix = f"fbtest-poison-{uuid.uuid4().hex[:8]}"
    url = kafka_backend.url(prefix, visibility_timeout=60, max_deliveries=MAX_DELIVERIES)
    queue = "poison"

    async def publish() -> None:
        async with from_url(url) as bus:
            await bus.publish(queue, {"task": "poison"}, key="run-p")

    async def dead_letters() -> list[tuple[int, str]]:
        async with from_url(url) as bus:
            try:
                return [(d.deliveries, d.reason) for d in await bus.dead_letters(queue)]
            finally:
                await bus.delete(queue)

    asyncio.run(publish())
    procs = Procs(tmp_path, dict(os.environ, PYTHONUNBUFFERED="1"))
    said: list[str] = []
    codes: list[int] = []
    try:
        for i in range(MAX_DELIVERIES + 1):
            name = f"child{i}"
            codes.append(procs.start(name, "kafka_poison_child.py", url, queue).wait(60))
            said.append(procs.log(name).strip().splitlines()[-1] if procs.log(name) else "")
    finally:
        procs.stop_all()
        dead = asyncio.run(dead_letters())
    expected = [f"took {n}" for n in range(1, MAX_DELIVERIES + 1)]
    assert said == [*expected, f"dead {MAX_DELIVERIES + 1}"], said
    assert codes == [-signal.SIGKILL] * MAX_DELIVERIES + [0], codes  # each taker was killed
    assert [n for n, _reason in dead] == [MAX_DELIVERIES + 1], dead
