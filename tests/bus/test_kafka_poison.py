"""A poison task on Kafka: every process that takes it dies (SIGKILL) while holding it.

Its count must survive the deaths: the bus logs each hand-out on the broker before the
work starts (`firebreak.bus._kafka_handouts`), because Tansu answers every OffsetFetch
without the commit metadata that could have carried it. Each child process below takes
tasks and kills itself holding them (`kafka_poison_child.py`); the next one takes over.
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


def _url(prefix: str) -> str:
    return kafka_backend.url(prefix, visibility_timeout=60, max_deliveries=MAX_DELIVERIES)


def _publish(url: str, queue: str, *ns: str) -> None:
    async def publish() -> None:
        async with from_url(url) as bus:
            for n in ns:
                await bus.publish(queue, {"n": n}, key="run-p")

    asyncio.run(publish())


def _dead_letters_and_delete(url: str, queue: str) -> list[tuple[str, int]]:
    async def read() -> list[tuple[str, int]]:
        async with from_url(url) as bus:
            try:
                return [(d.body["n"], d.deliveries) for d in await bus.dead_letters(queue)]
            finally:
                await bus.delete(queue)

    return asyncio.run(read())


def _run(procs: Procs, name: str, url: str, queue: str, *args: str) -> tuple[int, list[str]]:
    """Run one child to its end: its exit code and what it printed."""
    code = procs.start(name, "kafka_poison_child.py", url, queue, *args).wait(60)
    return code, procs.log(name).strip().splitlines()


def test_a_task_that_kills_every_worker_ends_in_the_dead_letters(tmp_path: Path) -> None:
    """Each taker is SIGKILLed holding it; the taker after max_deliveries gets it dead."""
    kafka_backend.require()
    url, queue = _url(f"fbtest-poison-{uuid.uuid4().hex[:8]}"), "poison"
    _publish(url, queue, "p")
    procs = Procs(tmp_path, dict(os.environ, PYTHONUNBUFFERED="1"))
    runs = []
    try:
        runs = [_run(procs, f"child{i}", url, queue) for i in range(MAX_DELIVERIES + 1)]
    finally:
        procs.stop_all()
        dead = _dead_letters_and_delete(url, queue)
    killed = [(-signal.SIGKILL, [f"took p {n}"]) for n in range(1, MAX_DELIVERIES + 1)]
    assert runs == [*killed, (0, [f"dead p {MAX_DELIVERIES + 1}"])], runs
    assert dead == [("p", MAX_DELIVERIES + 1)], dead


def test_a_task_acked_above_a_held_one_is_not_counted_again(tmp_path: Path) -> None:
    """A crash redelivers what was acked above the lowest held task, at its old count.

    The committed offset cannot pass a held task, so after its holder dies both come back;
    only the one the dead process held counts a delivery more (no false dead letter).
    """
    kafka_backend.require()
    url, queue = _url(f"fbtest-poison-{uuid.uuid4().hex[:8]}"), "poison"
    _publish(url, queue, "a", "b")
    procs = Procs(tmp_path, dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        first = _run(procs, "holder", url, queue, "2", "b")  # acks b, dies holding a
        second = _run(procs, "next", url, queue, "2", "all")
    finally:
        procs.stop_all()
        dead = _dead_letters_and_delete(url, queue)
    assert first == (-signal.SIGKILL, ["took a 1", "took b 1"]), first
    assert second == (0, ["took a 2", "took b 1"]), second
    assert dead == [], dead
