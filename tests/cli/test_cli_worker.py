"""`firebreak worker`: how many steps it runs at once, by default and when told."""

from __future__ import annotations

from typing import Any

import pytest
from cli_helpers import Invoke

from firebreak._cli import worker as worker_cli
from firebreak.engine.worker import WorkerStats


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the command hands the worker (the worker itself is tested with real buses)."""
    seen: dict[str, Any] = {}

    async def serve(workflows: Any, **options: Any) -> WorkerStats:
        seen.update(options)
        return WorkerStats()

    monkeypatch.setattr(worker_cli, "_serve", serve)
    return seen


def test_the_default_is_eight_steps_at_once(fb: Invoke, served: dict[str, Any]) -> None:
    result = fb("worker", "cli_workflows:ok")
    assert result.exit_code == 0, result.output
    assert served["concurrency"] == 8
    assert "warning" not in result.output


def test_a_worker_of_more_agents_gets_a_slot_per_agent(fb: Invoke, served: dict[str, Any]) -> None:
    """Below one slot per queue, NATS and RabbitMQ consumers make their queues take turns."""
    agents = ",".join(f"a{i}" for i in range(12))
    assert fb("worker", "cli_workflows:ok", "--agents", agents).exit_code == 0
    assert served["concurrency"] == 12


def test_fewer_slots_than_agents_is_obeyed_with_a_warning(
    fb: Invoke, served: dict[str, Any]
) -> None:
    result = fb("worker", "cli_workflows:ok", "--concurrency", "1")
    assert result.exit_code == 0, result.output
    assert served["concurrency"] == 1
    assert "--concurrency 1 is below the 2 agents this worker serves" in result.output
