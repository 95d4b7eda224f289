"""What one agent is: its function, its dependencies and its resilience options.

`AgentSpec` is the immutable, validated description of one agent; `AgentDefaults` holds
the options a `Workflow` applies to agents that do not set them; `AgentOptions` names the
keyword options `Workflow.agent`, `Workflow.add` and `AgentSpec.of` accept.
"""

from __future__ import annotations

import enum
import inspect
import keyword
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Final, Literal, NoReturn, TypeAlias, TypedDict, Unpack, get_args

from firebreak._jsonable import NotStorable, encode, is_model, summary
from firebreak.errors import ConfigError, DefinitionError
from firebreak.resilience import Retry
from firebreak.workflow._signature import (
    INPUT,
    agent_params,
    check_async,
    check_compensate,
    check_validator,
)

__all__ = [
    "MISSING",
    "AgentDefaults",
    "AgentFn",
    "AgentOptions",
    "AgentRef",
    "AgentSpec",
    "OnExhausted",
]

AgentFn: TypeAlias = Callable[..., Awaitable[Any]]
"""An agent: ``async def name(ctx, ...) -> output`` (see `firebreak.workflow`)."""

OnExhausted: TypeAlias = Literal["fail", "pause", "review"]
"""What happens when a critical agent's retries and fallbacks are spent."""

_ON_EXHAUSTED: Final = frozenset(get_args(OnExhausted))


class _Missing(enum.Enum):
    MISSING = "MISSING"

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing.MISSING
"""Marks an agent without a ``default=`` (so that ``default=None`` counts as given)."""


class AgentOptions(TypedDict, total=False):
    """The keyword options of `Workflow.agent` and `Workflow.add`; all are optional."""

    name: str
    """The agent's name (default: the function's ``__name__``); a Python identifier."""
    after: Sequence[AgentRef]
    """The agents whose outputs this one takes, by name, spec or function. Nothing implicit."""
    timeout: float | timedelta
    """Bound on the whole step, retries included; finite and > 0 (default from defaults)."""
    retry: Retry | None
    """A `firebreak.resilience.Retry`, or ``None`` for one attempt."""
    breaker: str | None
    """The service the agent calls; agents naming the same service share one breaker."""
    bulkhead: int | None
    """The most concurrent calls of this agent, or ``None`` for no limit."""
    critical: bool
    """If true (the default) the run fails when the agent does; if false it degrades."""
    default: Any
    """The neutral output an optional agent degrades to; required when ``critical=False``."""
    compensate: Callable[[Any, Any], Awaitable[None]] | None
    """``async (ctx, output) -> None`` that undoes the agent's effect if the run fails."""
    validate: type[Any] | Callable[[Any], Any] | None
    """A pydantic model class, or a callable of the output that raises or returns ``False``
    to reject it; ``True`` or ``None`` keeps the output, any other value replaces it."""
    fallbacks: Sequence[AgentFn]
    """Alternatives tried in order when the agent fails; same signature as the agent."""
    on_exhausted: OnExhausted
    """``"fail"`` the run, ``"pause"`` it for later, or send the step to ``"review"``."""


def _returned_model(fn: object) -> type[Any] | None:
    """`fn`'s return annotation if it is a pydantic model class.

    Only the return annotation is resolved: a parameter's, written for type checkers
    alone (under ``TYPE_CHECKING``), must not turn the rule off for this agent.
    """
    try:
        returns = inspect.get_annotations(fn).get("return")  # type: ignore[arg-type]
    except TypeError:  # not a function (a partial, an instance): no annotations of its own
        return None
    if isinstance(returns, str):  # `from __future__ import annotations`
        scope = getattr(inspect.unwrap(fn), "__globals__", {})  # type: ignore[arg-type]
        try:
            returns = eval(returns, scope)  # noqa: S307 - the module's own annotation
        except Exception:  # noqa: BLE001 - one that does not resolve names no model
            return None
    return returns if is_model(returns) else None


def _to_seconds(value: object) -> float | None:
    """Seconds from a number or timedelta; ``None`` unless finite and > 0."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentDefaults:
    """Options a workflow applies to every agent that does not set them itself.

    Example:
        >>> AgentDefaults(timeout=30, on_exhausted="pause").timeout
        30
    """

    timeout: float | timedelta = 60.0
    """Time limit of one attempt in seconds (or a timedelta); finite and > 0."""
    retry: Retry | None = None
    """Retry policy of agents that set none."""
    bulkhead: int | None = None
    """Concurrency limit of agents that set none."""
    critical: bool = True
    """Whether agents are critical unless they say otherwise."""
    on_exhausted: OnExhausted = "fail"
    """What a critical agent does when its retries and fallbacks are spent."""

    def __post_init__(self) -> None:
        if _to_seconds(self.timeout) is None:
            raise ConfigError("timeout", f"must be finite seconds > 0, got {self.timeout!r}")
        if self.retry is not None and not isinstance(self.retry, Retry):
            raise ConfigError("retry", f"must be a firebreak.Retry or None, got {self.retry!r}")
        if self.bulkhead is not None and not _is_count(self.bulkhead):
            raise ConfigError("bulkhead", f"must be an int >= 1, got {self.bulkhead!r}")
        if self.on_exhausted not in _ON_EXHAUSTED:
            raise ConfigError("on_exhausted", f"must be one of {sorted(_ON_EXHAUSTED)}")


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentSpec:
    """The validated, immutable description of one agent of a workflow.

    Built by `Workflow.agent`/`Workflow.add` (or `AgentSpec.of`); constructing one checks
    everything that concerns this agent alone and raises `DefinitionError` naming it.
    Checks that need the whole graph (unknown dependencies, cycles) are the workflow's.
    """

    name: str
    """Unique name within the workflow; a Python identifier other than ``input``."""
    fn: AgentFn
    """The agent's async function."""
    after: tuple[str, ...] = ()
    """Names of the agents whose outputs this one takes."""
    timeout: float = 60.0
    """Time limit of one attempt in seconds; finite and > 0.

    Each retry and each fallback gets its own; the run's deadline bounds the step as a
    whole (retries never sleep past it, and an attempt is cut to the time left).
    """
    retry: Retry | None = field(default=None, hash=False)
    """Retry policy, or ``None`` for one attempt."""
    breaker: str | None = None
    """Name of the (shared) circuit breaker of the service the agent calls."""
    bulkhead: int | None = None
    """Concurrency limit, or ``None``."""
    critical: bool = True
    """Whether the run fails when this agent does (otherwise it degrades to `default`)."""
    default: Any = field(default=MISSING, hash=False)
    """Output of the agent when it degrades; `MISSING` when not given."""
    compensate: Callable[[Any, Any], Awaitable[None]] | None = None
    """``async (ctx, output) -> None`` undoing the agent's effect when the run fails."""
    validate: type[Any] | Callable[[Any], Any] | None = None
    """Output validator: a pydantic model class or ``(output) -> output``.

    Not given: the function's return annotation, if a pydantic model class (``-> Invoice``
    checks the output and rebuilds it from its checkpoint, as ``validate=Invoice`` does).
    """
    fallbacks: tuple[AgentFn, ...] = ()
    """Alternatives with the agent's signature, tried in order."""
    on_exhausted: OnExhausted = "fail"
    """``"fail"``, ``"pause"`` or ``"review"`` when retries and fallbacks are spent."""
    params: tuple[str, ...] = field(init=False)
    """Names of the function's dependency parameters, in signature order."""
    input_param: str | None = field(init=False)
    """The parameter receiving the run input (a root agent's only one, else ``input``)."""

    def _fail(self, message: str) -> NoReturn:
        raise DefinitionError(f"agent {self.name!r}: {message}", agent=self.name)

    def __post_init__(self) -> None:  # noqa: PLR0912 - one flat list of checks
        name = self.name
        if not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name):
            raise DefinitionError(f"agent name must be a Python identifier, got {name!r}")
        if name == INPUT:
            self._fail(f"{INPUT!r} is reserved for the parameter receiving the run input")
        object.__setattr__(self, "after", tuple(self.after))
        object.__setattr__(self, "fallbacks", tuple(self.fallbacks))
        if len(set(self.after)) != len(self.after):
            self._fail(f"after={list(self.after)} names a dependency twice")
        if name in self.after:
            self._fail(f"depends on itself (cycle: {name} -> {name})")
        check_async(self.fn, agent=name, role="agent")
        params, input_param = agent_params(self.fn, agent=name, after=self.after)
        object.__setattr__(self, "params", params)
        object.__setattr__(self, "input_param", input_param)
        if self.validate is None:  # `-> Invoice`: checked and rebuilt as validate=Invoice is
            object.__setattr__(self, "validate", _returned_model(self.fn))
        for alt in self.fallbacks:
            check_async(alt, agent=name, role="fallback")
            alt_params = agent_params(alt, agent=name, after=self.after, role="fallback")
            if set(alt_params[0]) != set(params) or alt_params[1] != input_param:
                wanted = [*params, *([input_param] if input_param else [])]
                self._fail(f"fallback {alt!r} must take the agent's parameters {wanted}")
        seconds = _to_seconds(self.timeout)
        if seconds is None:
            self._fail(f"timeout must be finite seconds > 0, got {self.timeout!r}")
        object.__setattr__(self, "timeout", seconds)
        if self.retry is not None and not isinstance(self.retry, Retry):
            self._fail(f"retry must be a firebreak.Retry or None, got {self.retry!r}")
        if self.breaker is not None and (not isinstance(self.breaker, str) or not self.breaker):
            self._fail(f"breaker must be a service name, got {self.breaker!r}")
        if self.bulkhead is not None and not _is_count(self.bulkhead):
            self._fail(f"bulkhead must be an int >= 1 or None, got {self.bulkhead!r}")
        if not isinstance(self.critical, bool):
            self._fail(f"critical must be True or False, got {self.critical!r}")
        if not self.critical and self.default is MISSING:
            self._fail("is optional (critical=False) and needs an explicit default= to degrade to")
        if self.critical and self.default is not MISSING:
            self._fail("is critical, so default= would never be used; pass critical=False")
        if self.default is not MISSING:
            self._check_default()
        if self.compensate is not None:
            check_compensate(self.compensate, agent=name)
        if self.validate is not None:
            check_validator(self.validate, agent=name)
        if self.on_exhausted not in _ON_EXHAUSTED:
            self._fail(
                f"on_exhausted must be one of {sorted(_ON_EXHAUSTED)}, got {self.on_exhausted!r}"
            )

    def _check_default(self) -> None:
        """A default the run could not checkpoint, or read back, is refused now, not mid-run."""
        try:
            stored = encode(self.default, what="default=")
        except NotStorable as exc:
            self._fail(str(exc))
        model = self.validate
        if stored is not None and is_model(model):
            try:  # read back through the model, as every output of the agent is
                model.model_validate(stored)
            except Exception as exc:  # noqa: BLE001 - pydantic's error, summarised
                self._fail(f"default= {self.default!r} does not fit: {summary(exc)}")

    @property
    def has_default(self) -> bool:
        """Whether a ``default=`` was given (``None`` counts)."""
        return self.default is not MISSING

    @property
    def is_root(self) -> bool:
        """Whether the agent has no dependencies (it takes the run input)."""
        return not self.after

    def call_kwargs(self, run_input: Any, outputs: Mapping[str, Any]) -> dict[str, Any]:
        """The keyword arguments after the context: ``await spec.fn(ctx, **kwargs)``.

        Args:
            run_input: the input the run was started with.
            outputs: the outputs (or degraded defaults) of at least this agent's dependencies.
        """
        kwargs = {}
        for dep in self.params:  # a loop, not a comprehension: no frame of its own (3.11)
            kwargs[dep] = outputs[dep]
        if self.input_param is not None:
            kwargs[self.input_param] = run_input
        return kwargs

    @classmethod
    def of(
        cls,
        fn: AgentFn,
        /,
        *,
        defaults: AgentDefaults | None = None,
        **options: Unpack[AgentOptions],
    ) -> AgentSpec:
        """Build a spec from a function and `AgentOptions`, filling the rest from `defaults`.

        ``after=`` entries may be names, specs or functions; a function stands for the agent
        named by its ``__name__`` (`Workflow.add` first looks it up among its agents, so a
        function registered under another ``name=`` resolves correctly there).

        Example:
            >>> async def extract(ctx, invoice): ...
            >>> AgentSpec.of(extract, timeout=30).timeout
            30.0
        """
        d = defaults if defaults is not None else AgentDefaults()
        name = options.get("name", getattr(fn, "__name__", None))
        if unknown := sorted(options.keys() - AgentOptions.__optional_keys__):
            raise DefinitionError(f"agent {name!r}: unknown options {unknown}", agent=name)
        if not isinstance(name, str):
            raise DefinitionError(f"cannot tell the name of agent {fn!r}: pass name=")
        return cls(
            name=name,
            fn=fn,
            after=tuple(
                _ref_name(ref, agent=name) for ref in one_or_many(options.get("after", ()))
            ),
            timeout=options.get("timeout", d.timeout),  # type: ignore[arg-type] # normalised
            retry=options.get("retry", d.retry),
            breaker=options.get("breaker"),
            bulkhead=options.get("bulkhead", d.bulkhead),
            critical=options.get("critical", d.critical),
            default=options.get("default", MISSING),
            compensate=options.get("compensate"),
            validate=options.get("validate"),
            fallbacks=tuple(options.get("fallbacks", ())),
            on_exhausted=options.get("on_exhausted", d.on_exhausted),
        )


AgentRef: TypeAlias = str | AgentSpec | AgentFn
"""How ``after=`` names a dependency: its name, its spec or its (decorated) function."""


def one_or_many(after: Any) -> Sequence[Any]:
    """``after=`` as a sequence: a dependency given alone stands for itself.

    ``after="extract"`` is that agent, not its characters (a string is a sequence too).
    """
    if isinstance(after, str | AgentSpec) or callable(after):
        return (after,)
    return after  # type: ignore[no-any-return]


def _ref_name(ref: object, *, agent: str) -> str:
    if isinstance(ref, str):
        return ref
    if isinstance(ref, AgentSpec):
        return ref.name
    name = getattr(ref, "__name__", None)
    if not callable(ref) or not isinstance(name, str):
        raise DefinitionError(
            f"agent {agent!r}: after= takes agent names, specs or functions, got {ref!r}",
            agent=agent,
        )
    return name
