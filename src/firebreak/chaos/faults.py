"""What can go wrong, declared as data: `Fault` and `load_faults` (YAML, TOML or dicts).

A fault targets one agent (``agent:``) or every agent calling one service (``service:``,
the agents' ``breaker=`` name), and hits each attempt with a seeded probability: whether
attempt ``a`` of agent ``x`` in run ``r`` is hit depends only on ``(seed, r, x, a)``, never
on the order of calls, so a scenario faces the same faults every time it runs.

A fault file::

    faults:
      - kind: latency          # added before the call
        agent: extract
        delay: 30
      - kind: outage           # a hard outage: every call fails while it lasts
        service: dms-api
        start: 0
        duration: 300
      - kind: error
        agent: match_po
        error: permanent
        probability: 0.2
      - kind: kill             # SIGKILL the orchestrator process 3 times mid-batch
        target: orchestrator   # or: worker (one `firebreak worker` process)
        times: 3

A ``kill`` fault names no agent: it kills a whole process, so only the process scenarios
(``orchestrator-kill``, ``worker-kill``; `firebreak.chaos.processes`) act on it.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, get_args

from firebreak.errors import ConfigError, Permanent, Transient

__all__ = [
    "ChaosPermanent",
    "ChaosTransient",
    "Fault",
    "FaultKind",
    "Kill",
    "KillTarget",
    "ServiceDown",
    "load_faults",
]

FaultKind: TypeAlias = Literal[
    "latency", "timeout", "error", "outage", "corrupt", "contention", "kill"
]
"""``latency``: wait `Fault.delay`, then call; ``timeout``: hang for `Fault.delay` (past the
agent's timeout) and never answer; ``error``: raise a transient or permanent error;
``outage``: every call in the window fails with `ServiceDown`; ``corrupt``: the call's
output comes back mangled; ``contention``: each call beyond `Fault.capacity` in flight
adds `Fault.delay` seconds (a service that slows under load); ``kill``: SIGKILL the
`Fault.target` process (``orchestrator`` or ``worker``) `Fault.times` times, `Fault.after`
seconds after it is up or at a seeded moment mid-batch, and start it again."""

KillTarget: TypeAlias = Literal["orchestrator", "worker"]
"""The process a ``kill`` fault kills."""

_KINDS: Final = frozenset(get_args(FaultKind))
_KILL_TARGETS: Final = frozenset(get_args(KillTarget))


class ChaosTransient(Transient):
    """An injected transient error (retrying may help)."""


class ChaosPermanent(Permanent):
    """An injected permanent error (retrying cannot help)."""


class ServiceDown(Transient, ConnectionError):
    """An injected hard outage: the service refuses every call while it lasts."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Fault:
    """One injected fault on one agent or on every agent of one service.

    Example:
        >>> Fault(kind="latency", agent="extract", delay=30).targets("extract", None)
        True
    """

    kind: FaultKind
    """What goes wrong (see `FaultKind`)."""
    agent: str | None = None
    """The agent hit, by name; or give `service`."""
    service: str | None = None
    """The service hit: every agent whose ``breaker=`` names it."""
    probability: float = 1.0
    """Share of attempts hit (seeded per run, agent and attempt)."""
    delay: float = 30.0
    """Seconds: added latency, the hang of a timeout, or contention per excess call."""
    error: Literal["transient", "permanent"] = "transient"
    """The kind of error an ``error`` fault raises."""
    start: float = 0.0
    """Seconds after the scenario starts when the fault begins."""
    duration: float | None = None
    """Seconds the fault lasts; ``None``: to the end."""
    fallbacks: bool = False
    """Whether the agent's fallbacks are hit too (they usually call another service)."""
    capacity: int = 10
    """Calls a ``contention`` service serves at full speed at once."""
    target: KillTarget | None = None
    """The process a ``kill`` fault kills: ``orchestrator`` or ``worker``."""
    after: float | None = None
    """``kill``: seconds after the process is up; ``None``: a seeded moment mid-batch
    (after a seeded number of steps of the batch)."""
    times: int = 1
    """``kill``: how many times the process is killed (and started again)."""

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ConfigError("kind", f"must be one of {sorted(_KINDS)}, got {self.kind!r}")
        if self.kind == "kill":
            self._check_kill()
            return
        if self.target is not None:
            raise ConfigError("target", f"only a kill fault names a target, not {self.kind}")
        if (self.agent is None) == (self.service is None):
            raise ConfigError("agent", f"a {self.kind} fault names an agent or a service")
        if not 0.0 <= self.probability <= 1.0:
            raise ConfigError("probability", f"must be in [0, 1], got {self.probability!r}")
        for name in ("delay", "start"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
                raise ConfigError(name, f"must be finite seconds >= 0, got {value!r}")
        if self.duration is not None and not self.duration > 0:
            raise ConfigError("duration", f"must be seconds > 0 or None, got {self.duration!r}")
        if self.error not in ("transient", "permanent"):
            raise ConfigError("error", f"must be transient or permanent, got {self.error!r}")
        if not isinstance(self.capacity, int) or self.capacity < 1:
            raise ConfigError("capacity", f"must be an int >= 1, got {self.capacity!r}")

    def _check_kill(self) -> None:
        if self.target not in _KILL_TARGETS:
            raise ConfigError(
                "target", f"a kill fault names target orchestrator or worker, got {self.target!r}"
            )
        if self.agent is not None or self.service is not None:
            raise ConfigError("agent", "a kill fault kills a process: it names no agent or service")
        after = self.after
        if after is not None and (
            not isinstance(after, int | float) or not math.isfinite(after) or after < 0
        ):
            raise ConfigError("after", f"must be finite seconds >= 0 or None, got {after!r}")
        if not isinstance(self.times, int) or isinstance(self.times, bool) or self.times < 1:
            raise ConfigError("times", f"must be an int >= 1, got {self.times!r}")

    def targets(self, agent: str, breaker: str | None) -> bool:
        """Whether the fault hits `agent` (whose breaker, if any, is `breaker`).

        A ``kill`` fault hits no agent: it kills a process.
        """
        if self.kind == "kill":
            return False
        return agent == self.agent if self.agent is not None else breaker == self.service

    def active(self, elapsed: float) -> bool:
        """Whether the fault is on `elapsed` seconds after the scenario started."""
        if elapsed < self.start:
            return False
        return self.duration is None or elapsed < self.start + self.duration

    @property
    def label(self) -> str:
        """``latency 30s on extract``: for reports."""
        if self.kind == "kill":
            when = "at seeded moments mid-batch" if self.after is None else f"{self.after:g}s in"
            return f"SIGKILL {self.target} x{self.times} {when}"
        where = f"agent {self.agent}" if self.agent else f"service {self.service}"
        what = {
            "latency": f"+{self.delay:g}s latency",
            "timeout": f"hang {self.delay:g}s",
            "error": f"{self.error} error",
            "outage": "outage",
            "corrupt": "corrupt output",
            "contention": f"+{self.delay:g}s per call over {self.capacity}",
        }.get(self.kind, self.kind)
        window = "" if self.duration is None else f" for {self.duration:g}s"
        start = f" from {self.start:g}s" if self.start else ""
        share = "" if self.probability == 1 else f" ({self.probability:.0%} of calls)"
        return f"{what} on {where}{share}{start}{window}"

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Fault:
        """Build from a mapping (one entry of a fault file); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError("fault", f"unknown fault options {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


def Kill(target: KillTarget, *, after: float | None = None, times: int = 1) -> Fault:  # noqa: N802 - reads as the fault it makes
    """A ``kill`` fault: SIGKILL the `target` process `times` times and start it again.

    Example:
        >>> Kill("orchestrator", times=3).label
        'SIGKILL orchestrator x3 at seeded moments mid-batch'
    """
    return Fault(kind="kill", target=target, after=after, times=times)


def _parse(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".toml":
        return tomllib.loads(text)
    if path.suffix in (".yaml", ".yml"):
        import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 - the chaos extra; only fault files in YAML need it

        return yaml.safe_load(text)
    return json.loads(text)


def load_faults(source: Path | str | Iterable[Mapping[str, Any]]) -> list[Fault]:
    """Faults from a YAML/TOML/JSON file (a ``faults`` list) or from a list of mappings.

    Raises:
        ConfigError: the file is unreadable or an entry is invalid.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data = _parse(path)
        except OSError as exc:
            raise ConfigError("faults", f"{path}: cannot read: {exc.strerror or exc}") from None
        except Exception as exc:  # noqa: BLE001 - any parser's error is the same mistake
            raise ConfigError("faults", f"{path}: cannot parse: {exc}") from None
        entries = data.get("faults") if isinstance(data, Mapping) else data
    else:
        entries = list(source)
    if not isinstance(entries, list) or not all(isinstance(e, Mapping) for e in entries):
        raise ConfigError("faults", "expected a list of faults (a 'faults' list in a file)")
    return [Fault.from_dict(entry) for entry in entries]
