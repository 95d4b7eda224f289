"""Layer 8: seeded fault injection, the four standard chaos scenarios, and process kills.

Faults (`Fault`: latency, timeout, error, outage, corrupt, contention, kill) are declared in
code or loaded from YAML/TOML/JSON (`load_faults`) and injected by `inject`, which returns
a copy of a workflow whose agents pass through them; the draw of every fault depends only
on ``(seed, run, agent, attempt)``. `run_scenario` runs a standard scenario on a `Target`
(``invoices()`` is the invoice example) and returns a `ScenarioReport` with the figures
and the pass criteria; ``firebreak chaos run`` is its command line. The ``kill`` fault
(`Kill`) acts in the process scenarios ``orchestrator-kill`` and ``worker-kill``, which
SIGKILL a real orchestrator or worker process mid-batch and restart it
(`firebreak.chaos.processes`).

>>> import asyncio
>>> from firebreak.chaos import ChaosOptions, invoices, run_scenario
>>> report = asyncio.run(run_scenario("agent-outage", invoices(), ChaosOptions(n=10)))
>>> report.passed, report.lost, report.duplicated
(True, 0, 0)
"""

from __future__ import annotations

from firebreak.chaos.faults import (
    ChaosPermanent,
    ChaosTransient,
    Fault,
    FaultKind,
    Kill,
    KillTarget,
    ServiceDown,
    load_faults,
)
from firebreak.chaos.inject import AuditingExecutor, Injector, corrupt_value, inject
from firebreak.chaos.report import Criterion, ScenarioReport, percentile, write_chart
from firebreak.chaos.scenarios import (
    PROCESS_SCENARIOS,
    SCENARIOS,
    STANDARD,
    ChaosOptions,
    run_scenario,
)
from firebreak.chaos.targets import Target, check_invoice, invoices, of_workflow

__all__ = [
    "PROCESS_SCENARIOS",
    "SCENARIOS",
    "STANDARD",
    "AuditingExecutor",
    "ChaosOptions",
    "ChaosPermanent",
    "ChaosTransient",
    "Criterion",
    "Fault",
    "FaultKind",
    "Injector",
    "Kill",
    "KillTarget",
    "ScenarioReport",
    "ServiceDown",
    "Target",
    "check_invoice",
    "corrupt_value",
    "inject",
    "invoices",
    "load_faults",
    "of_workflow",
    "percentile",
    "run_scenario",
    "write_chart",
]
