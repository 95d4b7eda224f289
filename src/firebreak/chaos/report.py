"""What a scenario found: the figures, the pass criteria, JSON and a PNG chart."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Criterion", "ScenarioReport", "percentile", "write_chart"]


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0..100) of `values`, nearest rank; 0 for none."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True, kw_only=True)
class Criterion:
    """One pass criterion of a scenario and whether it held."""

    name: str
    """What must hold, e.g. ``no run lost``."""
    passed: bool
    """Whether it held."""
    detail: str = ""
    """The figures behind the verdict."""


@dataclass(slots=True, kw_only=True)
class ScenarioReport:
    """The outcome of one chaos scenario: figures, criteria, notes."""

    scenario: str
    """The scenario's name."""
    workflow: str
    """The workflow's name."""
    runs: int = 0
    """Runs started."""
    succeeded: int = 0
    """Runs that succeeded."""
    degraded: int = 0
    """Runs that succeeded with optional agents at their defaults."""
    paused: int = 0
    """Runs still paused at the end (the peak is in `figures`)."""
    failed: int = 0
    """Runs that failed."""
    needs_review: int = 0
    """Runs waiting for a person."""
    dead_lettered: int = 0
    """Entries in the dead-letter queue for these runs."""
    shed: int = 0
    """Runs refused with `Overloaded`."""
    lost: int = 0
    """Runs not accounted for in the store (must be 0)."""
    duplicated: int = 0
    """Steps run again after their result was committed (must be 0)."""
    faults: list[str] = field(default_factory=list)
    """The faults injected."""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Options the scenario set on the workflow's copy (configuration it lacked)."""
    figures: dict[str, float] = field(default_factory=dict)
    """Scenario-specific numbers: latencies, breaker trips, rejections, time."""
    criteria: list[Criterion] = field(default_factory=list)
    """The pass criteria."""
    notes: list[str] = field(default_factory=list)
    """Findings worth acting on (what the engine or workflow lacks)."""
    time: str = "virtual"
    """``virtual`` (compressed) or ``real`` seconds."""
    skipped: str | None = None
    """Why the scenario did not run (e.g. ``worker-kill`` without a Redis bus), else None."""

    @property
    def passed(self) -> bool:
        """Whether every criterion held (a skipped scenario did not pass)."""
        return self.skipped is None and all(c.passed for c in self.criteria)

    def require(self, name: str, passed: bool, detail: str = "") -> None:  # noqa: FBT001
        """Add a criterion."""
        self.criteria.append(Criterion(name=name, passed=bool(passed), detail=detail))

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready data, with ``passed``."""
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def write_json(self, path: Path) -> None:
        """Write the report as JSON to `path`."""
        path.write_text(json.dumps(self.as_dict(), indent=2, default=str) + "\n", "utf-8")

    def counts(self) -> Mapping[str, int]:
        """The outcome counts, in report order."""
        return {
            "runs": self.runs,
            "succeeded": self.succeeded,
            "degraded": self.degraded,
            "paused": self.paused,
            "failed": self.failed,
            "needs review": self.needs_review,
            "dead-lettered": self.dead_lettered,
            "shed": self.shed,
            "lost": self.lost,
            "duplicated": self.duplicated,
        }


def write_chart(report: ScenarioReport, path: Path) -> None:
    """Draw the report as a PNG: outcome counts, latencies if any, pass/fail per criterion."""
    import matplotlib as mpl  # noqa: PLC0415 - optional extra (chaos), only when asked

    mpl.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    latencies = {k: v for k, v in report.figures.items() if k.startswith(("p50", "p99"))}
    panels = 3 if latencies else 2
    fig, axes = plt.subplots(1, panels, figsize=(5 * panels, 4.5))
    counts = dict(report.counts())
    bad = {"lost", "duplicated", "failed"}
    colours = ["tab:red" if k in bad and v else "tab:blue" for k, v in counts.items()]
    axes[0].barh(list(counts), list(counts.values()), color=colours)
    axes[0].invert_yaxis()
    axes[0].set_title("runs")
    for y, value in enumerate(counts.values()):
        axes[0].text(value, y, f" {value}", va="center")
    if latencies:
        ax = axes[1]
        ax.bar(list(latencies), list(latencies.values()), color="tab:orange")
        ax.set_title(f"latency ({report.time} s)")
        ax.tick_params(axis="x", rotation=30)
    ax = axes[-1]
    names = [c.name for c in report.criteria]
    ax.barh(
        names,
        [1] * len(names),
        color=["tab:green" if c.passed else "tab:red" for c in report.criteria],
    )
    ax.invert_yaxis()
    ax.set_xticks([])
    ax.set_title("criteria (green: held)")
    verdict = "PASS" if report.passed else "FAIL"
    fig.suptitle(f"chaos: {report.scenario} on {report.workflow} — {verdict}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
