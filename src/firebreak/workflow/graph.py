"""The workflow: a DAG of agents, valid at every moment, and what its shape implies.

A `Workflow` only ever holds a valid graph. `Workflow.agent`/`Workflow.add` accept an agent
only if everything it depends on is already defined, so agents are defined in dependency
order and no cycle can form; `Workflow.from_specs` takes specs in any order (forward
references) and checks the whole graph at once, reporting a cycle as ``a -> b -> a``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import MappingProxyType
from typing import Any, TypeVar, Unpack, overload

from firebreak.errors import ConfigError, DefinitionError
from firebreak.workflow._dag import find_cycle, topological
from firebreak.workflow.reliability import Reliability, estimate
from firebreak.workflow.spec import (
    AgentDefaults,
    AgentFn,
    AgentOptions,
    AgentRef,
    AgentSpec,
    _to_seconds,
    one_or_many,
)

__all__ = ["BlastRadius", "Workflow"]

_F = TypeVar("_F", bound=AgentFn)


@dataclass(frozen=True, slots=True, kw_only=True)
class BlastRadius:
    """What the final failure of one agent does to a run (see `Workflow.blast_radius`)."""

    agent: str
    """The agent that fails (retries, fallbacks, pause and review all spent)."""
    fails_run: bool
    """Whether the run fails: true exactly when the agent is critical."""
    skipped: tuple[str, ...]
    """Agents that never run: every transitive dependent of a failed critical agent."""
    degraded: tuple[str, ...]
    """Agents whose output becomes their default: the agent itself, when optional."""
    degraded_inputs: tuple[str, ...]
    """Agents that still run but receive a degraded input: an optional agent's dependents."""


class Workflow:
    """A named DAG of agents with a run deadline and per-agent defaults.

    Example:
        >>> wf = Workflow("invoice", deadline=300)
        >>> @wf.agent(timeout=30)
        ... async def extract(ctx, invoice): ...
        >>> @wf.agent(after=[extract], critical=False, default=None)
        ... async def enrich(ctx, extract): ...
        >>> wf.order()
        ('extract', 'enrich')

    Args:
        name: the workflow's name (runs and metrics are labelled with it).
        deadline: bound on a whole run in seconds or as a timedelta; ``None`` for none.
        defaults: options for agents that do not set them (timeout 60 s, critical, ...).
        input: schema of the run input — a pydantic model or a callable that raises or
            returns ``False`` to reject it (``True`` or ``None`` keeps it, another value
            replaces it); invalid input is rejected before any agent runs.
    """

    __slots__ = ("_agents", "_deadline", "_defaults", "_frozen", "_input", "_name")

    def __init__(
        self,
        name: str,
        *,
        deadline: float | timedelta | None = None,
        defaults: AgentDefaults | None = None,
        input: type[Any] | Callable[[Any], Any] | None = None,  # noqa: A002 - the run's input
    ) -> None:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError("name", f"a workflow needs a non-blank name, got {name!r}")
        seconds = None if deadline is None else _to_seconds(deadline)
        if deadline is not None and seconds is None:
            raise ConfigError("deadline", f"must be finite seconds > 0 or None, got {deadline!r}")
        self._name = name
        self._deadline = seconds
        self._defaults = defaults if defaults is not None else AgentDefaults()
        self._agents: dict[str, AgentSpec] = {}
        self._frozen = False
        if input is not None and not callable(input):
            raise ConfigError("input", f"must be a pydantic model or a callable, got {input!r}")
        self._input = input

    @property
    def name(self) -> str:
        """The workflow's name."""
        return self._name

    @property
    def deadline(self) -> float | None:
        """Bound on a whole run, in seconds, or ``None``."""
        return self._deadline

    @property
    def defaults(self) -> AgentDefaults:
        """Options applied to agents that do not set them."""
        return self._defaults

    @property
    def agents(self) -> Mapping[str, AgentSpec]:
        """Read-only view of the agents by name, in definition (= topological) order."""
        return MappingProxyType(self._agents)

    @property
    def input_schema(self) -> type[Any] | Callable[[Any], Any] | None:
        """The run input's schema (pydantic model or callable), or ``None``."""
        return self._input

    @property
    def frozen(self) -> bool:
        """Whether agents can no longer be added (see `freeze`)."""
        return self._frozen

    def freeze(self) -> Workflow:
        """Refuse further agents from now on (the engine freezes a workflow it runs).

        Raises:
            DefinitionError: the workflow has no agent (a run of it would "succeed" having
                done nothing).
        """
        if not self._agents:
            raise DefinitionError(f"workflow {self._name!r} has no agents: add one with @wf.agent")
        self._frozen = True
        return self

    @overload
    def agent(self, fn: _F, /) -> _F: ...
    @overload
    def agent(self, /, **options: Unpack[AgentOptions]) -> Callable[[_F], _F]: ...
    def agent(
        self, fn: _F | None = None, /, **options: Unpack[AgentOptions]
    ) -> _F | Callable[[_F], _F]:
        """Decorator form of `add`: registers the function and returns it unchanged.

        Usable bare (``@wf.agent``) or with `AgentOptions` (``@wf.agent(after=[extract])``).
        The function stays callable as written, and ``after=[fn]`` refers to it.
        """

        def register(func: _F) -> _F:
            self.add(func, **options)
            return func

        return register if fn is None else register(fn)

    def add(self, fn: AgentFn, /, **options: Unpack[AgentOptions]) -> AgentSpec:
        """Add an agent, given its function and `AgentOptions`; return its spec.

        Raises:
            DefinitionError: the agent is invalid, its name is taken, a dependency is not
                defined yet (define agents in dependency order, or use `from_specs`), or
                the workflow is frozen. The error's ``agent`` names the agent.
        """
        label = options.get("name") or str(getattr(fn, "__name__", fn))
        if self._frozen:
            raise DefinitionError(
                f"agent {label!r}: workflow {self._name!r} is frozen", agent=label
            )
        if "after" in options:
            after = one_or_many(options["after"])
            options["after"] = [self._dependency(ref, agent=label) for ref in after]
        return self._register(AgentSpec.of(fn, defaults=self._defaults, **options))

    @classmethod
    def from_specs(
        cls,
        name: str,
        specs: Iterable[AgentSpec],
        *,
        deadline: float | timedelta | None = None,
        defaults: AgentDefaults | None = None,
    ) -> Workflow:
        """Build a workflow from specs in any order; dependencies may be forward references.

        Raises:
            DefinitionError: duplicate names, unknown dependencies, or a cycle, printed in
                data-flow order (``cycle: a -> b -> a``: b takes a's output and a takes b's).
        """
        wf = cls(name, deadline=deadline, defaults=defaults)
        by_name: dict[str, AgentSpec] = {}
        for spec in specs:
            if not isinstance(spec, AgentSpec):
                raise DefinitionError(f"from_specs takes AgentSpec objects, got {spec!r}")
            if spec.name in by_name:
                raise DefinitionError(f"duplicate agent name {spec.name!r}", agent=spec.name)
            by_name[spec.name] = spec
        for spec in by_name.values():
            for dep in spec.after:
                if dep not in by_name:
                    raise DefinitionError(
                        f"agent {spec.name!r}: unknown dependency {dep!r}", agent=spec.name
                    )
        if cycle := find_cycle(by_name):
            raise DefinitionError(
                f"agent {cycle[0]!r}: cycle: {' -> '.join(cycle)}", agent=cycle[0]
            )
        for spec in topological(by_name):
            wf._register(spec)
        return wf

    def _fn_names(self, fn: object) -> list[str]:
        return [spec.name for spec in self._agents.values() if spec.fn is fn]

    def _dependency(self, ref: AgentRef, *, agent: str) -> AgentRef:
        """Map a function in ``after=`` to the name it was registered under."""
        if isinstance(ref, str | AgentSpec) or not callable(ref):
            return ref  # AgentSpec.of checks names, specs and junk
        names = self._fn_names(ref)
        if len(names) != 1:
            problem = "is not an agent of" if not names else f"is registered as {names} in"
            raise DefinitionError(
                f"agent {agent!r}: after= function {getattr(ref, '__qualname__', ref)!r} "
                f"{problem} workflow {self._name!r}; name the agent instead",
                agent=agent,
            )
        return names[0]

    def _register(self, spec: AgentSpec) -> AgentSpec:
        if self._frozen:
            raise DefinitionError(
                f"agent {spec.name!r}: workflow {self._name!r} is frozen", agent=spec.name
            )
        if spec.name in self._agents:
            raise DefinitionError(
                f"agent {spec.name!r}: duplicate agent name in workflow {self._name!r}",
                agent=spec.name,
            )
        for dep in spec.after:
            if dep not in self._agents:
                raise DefinitionError(
                    f"agent {spec.name!r}: unknown dependency {dep!r} (define an agent before "
                    "those that use it, or build the workflow with Workflow.from_specs)",
                    agent=spec.name,
                )
        self._agents[spec.name] = spec
        return spec

    def __getitem__(self, ref: AgentRef) -> AgentSpec:
        """The spec of an agent given by name, spec or function; `KeyError` if absent."""
        if isinstance(ref, AgentSpec):
            name = ref.name
        elif isinstance(ref, str):
            name = ref
        elif len(names := self._fn_names(ref)) == 1:
            name = names[0]
        else:
            raise KeyError(f"workflow {self._name!r}: no single agent runs {ref!r}")
        try:
            return self._agents[name]
        except KeyError:
            raise KeyError(f"workflow {self._name!r} has no agent {name!r}") from None

    def __contains__(self, ref: object) -> bool:
        if not isinstance(ref, str | AgentSpec) and not callable(ref):
            return False
        try:
            self[ref]
        except KeyError:
            return False
        return True

    def __iter__(self) -> Iterator[AgentSpec]:
        return iter(self._agents.values())

    def __len__(self) -> int:
        return len(self._agents)

    def __repr__(self) -> str:
        return f"<Workflow {self._name!r}: {len(self._agents)} agents>"

    def order(self) -> tuple[str, ...]:
        """A topological order of the agents: definition order, which always is one."""
        return tuple(self._agents)

    def levels(self) -> tuple[tuple[str, ...], ...]:
        """Agents grouped in waves: each depends only on agents of earlier waves."""
        depth: dict[str, int] = {}
        for spec in self._agents.values():
            depth[spec.name] = 1 + max((depth[d] for d in spec.after), default=-1)
        waves: list[list[str]] = [[] for _ in range(1 + max(depth.values(), default=-1))]
        for name, level in depth.items():
            waves[level].append(name)
        return tuple(tuple(wave) for wave in waves)

    def dependents(self, agent: AgentRef) -> tuple[str, ...]:
        """Every agent that (transitively) takes `agent`'s output, in topological order."""
        reached = {self[agent].name}
        out: list[str] = []
        for spec in self._agents.values():
            if any(dep in reached for dep in spec.after):
                reached.add(spec.name)
                out.append(spec.name)
        return tuple(out)

    def blast_radius(self, agent: AgentRef) -> BlastRadius:
        """What the final failure of `agent` does to a run.

        A critical agent fails the run and every transitive dependent is skipped. An
        optional agent degrades to its default and its direct dependents run with that
        degraded input (their own outputs, and what depends on them, are normal outputs).
        """
        spec = self[agent]
        if spec.critical:
            return BlastRadius(
                agent=spec.name,
                fails_run=True,
                skipped=self.dependents(spec.name),
                degraded=(),
                degraded_inputs=(),
            )
        direct = tuple(s.name for s in self._agents.values() if spec.name in s.after)
        return BlastRadius(
            agent=spec.name,
            fails_run=False,
            skipped=(),
            degraded=(spec.name,),
            degraded_inputs=direct,
        )

    def reliability(
        self,
        rates: Mapping[str, float] | float,
        *,
        with_retries: bool = True,
        with_degradation: bool = True,
    ) -> Reliability:
        """Estimate end-to-end success from per-agent success rates; see `estimate`."""
        return estimate(
            self._agents.values(),
            rates,
            with_retries=with_retries,
            with_degradation=with_degradation,
        )
