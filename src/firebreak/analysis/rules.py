"""The production checks: one function per rule, each finding naming the agent and the fix.

| code  | severity | what it flags |
|-------|----------|---------------|
| FB001 | error    | an agent declared to call a service has no circuit breaker |
| FB002 | warning  | an agent that looks like it calls a service has no breaker |
| FB003 | error    | a step without a finite timeout |
| FB004 | warning  | the workflow has no run deadline, or a step timeout longer than it |
| FB005 | error    | retries that are unbounded in practice (more than 10 attempts) |
| FB006 | error    | long or waiting runs on ``memory://`` (lost on restart); Redis: warning |
| FB007 | warning  | no store configured: the default SQLite file on this host |
| FB008 | error    | no dead-letter destination, or one that dies with the process |
| FB009 | error    | no metrics exporter |
| FB010 | warning  | an error type the workflow can raise has no runbook |
| FB011 | error    | an optional agent's default invents data (anything but ``None`` or empty) |
| FB012 | error    | a critical payment-like step retried more than twice |
"""

from __future__ import annotations

import enum
import math
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from firebreak.analysis.config import DeploymentConfig
from firebreak.analysis.markers import is_payment, service_of
from firebreak.workflow import AgentSpec, Workflow

__all__ = ["MAX_ATTEMPTS", "RULES", "Finding", "Rule", "Severity", "error_types", "kebab"]

MAX_ATTEMPTS: Final = 10
"""More attempts than this count as unbounded retries (FB005)."""

PAYMENT_ATTEMPTS: Final = 2
"""The most attempts a payment-like step may make (FB012; RESILIENCE.md: 1-2, then a human)."""

_SERVICE_WORDS = re.compile(
    r"\b(api|apis|http|https|service|services|server|endpoint|llm|model|gpt|openai|anthropic|"
    r"ocr|erp|crm|dms|webhook|rest|grpc|remote|external|upload|download|email|sms|"
    r"fetch|request|requests)\b",
    re.IGNORECASE,
)
_PAYMENT_WORDS = re.compile(
    r"(^|_|\b)(pay|pays|payment|payments|payout|charge|charges|refund|refunds|transfer|"
    r"withdraw|withdrawal|settle|settlement|billing|capture)(_|\b|$)",
    re.IGNORECASE,
)


class Severity(enum.StrEnum):
    """How bad a finding is: errors fail `firebreak check`, warnings do not."""

    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True, slots=True, kw_only=True)
class Finding:
    """One problem found: which rule, where, why and how to fix it."""

    code: str
    """The rule's code, e.g. ``FB001``."""
    rule: str
    """The rule's name, e.g. ``external-without-breaker``."""
    severity: Severity
    """Error or warning."""
    message: str
    """What is wrong, naming the agent."""
    fix: str
    """How to fix it."""
    agent: str | None = None
    """The agent concerned, or ``None`` for the workflow or its deployment."""

    def as_dict(self) -> dict[str, Any]:
        """The finding as JSON-ready data."""
        return {
            "code": self.code,
            "rule": self.rule,
            "severity": self.severity.value,
            "agent": self.agent,
            "message": self.message,
            "fix": self.fix,
        }


Check = Callable[["Rule", Workflow, DeploymentConfig], Iterator[Finding]]


@dataclass(frozen=True, slots=True, kw_only=True)
class Rule:
    """A production check: its code, name, default severity and function."""

    code: str
    """``FB001`` ..."""
    name: str
    """A short kebab-case name."""
    severity: Severity
    """The severity of its findings (some rules lower it case by case)."""
    summary: str
    """One line: what the rule flags."""
    check: Check
    """``check(rule, workflow, config)`` yields the findings."""

    def finding(
        self, message: str, fix: str, *, agent: str | None = None, severity: Severity | None = None
    ) -> Finding:
        """A finding of this rule."""
        return Finding(
            code=self.code,
            rule=self.name,
            severity=severity or self.severity,
            message=message,
            fix=fix,
            agent=agent,
        )


RULES: list[Rule] = []
"""Every rule, in code order."""


def _rule(code: str, name: str, severity: Severity, summary: str) -> Callable[[Check], Check]:
    def register(check: Check) -> Check:
        RULES.append(Rule(code=code, name=name, severity=severity, summary=summary, check=check))
        return check

    return register


def _doc(spec: AgentSpec) -> str:
    return f"{spec.name.replace('_', ' ')} {getattr(spec.fn, '__doc__', None) or ''}"


def _declared_external(spec: AgentSpec, config: DeploymentConfig) -> str | None:
    """The service `spec` is declared to call, if it is (marker or config)."""
    service = service_of(spec.fn)
    if service is not None:
        return service
    return "an external service" if spec.name in config.external else None


@_rule(
    "FB001",
    "external-without-breaker",
    Severity.ERROR,
    "an agent declared to call a service has no circuit breaker",
)
def _external_without_breaker(
    rule: Rule, workflow: Workflow, config: DeploymentConfig
) -> Iterator[Finding]:
    for spec in workflow:
        service = _declared_external(spec, config)
        if service is not None and spec.breaker is None:
            name = service if service != "an external service" else "the-service"
            yield rule.finding(
                f"agent {spec.name!r} calls {service} but has no circuit breaker: during an "
                "outage every run keeps calling it and waits out every timeout",
                f"pass breaker={name!r} to the agent (agents calling one service share it)",
                agent=spec.name,
            )


@_rule(
    "FB002",
    "possibly-external-without-breaker",
    Severity.WARNING,
    "an agent that looks like it calls a service has no circuit breaker",
)
def _maybe_external(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    for spec in workflow:
        if spec.breaker is not None or spec.name in config.local:
            continue
        if _declared_external(spec, config) is not None:
            continue  # FB001's
        why = []
        if spec.retry is not None:
            why.append("it retries (only remote calls fail transiently)")
        if words := sorted({m.lower() for m in _SERVICE_WORDS.findall(_doc(spec))}):
            why.append(f"its name or docstring mentions {', '.join(words)}")
        if why:
            yield rule.finding(
                f"agent {spec.name!r} has no circuit breaker and may call a service: "
                f"{'; '.join(why)}",
                "pass breaker='SERVICE' if it calls one; if it does not, list it under "
                "[check] local in firebreak.toml",
                agent=spec.name,
            )


@_rule("FB003", "step-timeout-not-finite", Severity.ERROR, "a step without a finite timeout")
def _timeout(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:  # noqa: ARG001
    for spec in workflow:
        timeout = spec.timeout
        if not isinstance(timeout, int | float) or not math.isfinite(timeout) or timeout <= 0:
            yield rule.finding(
                f"agent {spec.name!r} has no finite timeout ({timeout!r}): "
                "a hung call hangs the run",
                "pass timeout=SECONDS (finite, > 0) to the agent",
                agent=spec.name,
            )


@_rule(
    "FB004",
    "no-run-deadline",
    Severity.WARNING,
    "no run deadline, or a step timeout longer than the deadline",
)
def _deadline(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:  # noqa: ARG001
    deadline = workflow.deadline
    if deadline is None:
        yield rule.finding(
            f"workflow {workflow.name!r} has no deadline: retries, fallbacks and pauses of "
            "one run have no overall bound",
            f"Workflow({workflow.name!r}, deadline=SECONDS)",
        )
        return
    for spec in workflow:
        if spec.timeout > deadline:
            yield rule.finding(
                f"agent {spec.name!r}: timeout {spec.timeout:g} s is longer than the run's "
                f"deadline {deadline:g} s, so the deadline, not the timeout, cuts it",
                f"lower the agent's timeout below {deadline:g} s or raise the deadline",
                agent=spec.name,
            )


@_rule(
    "FB005",
    "unbounded-retries",
    Severity.ERROR,
    f"retries unbounded in practice (more than {MAX_ATTEMPTS} attempts)",
)
def _retries(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:  # noqa: ARG001
    for spec in workflow:
        attempts = spec.retry.attempts if spec.retry is not None else 1
        if attempts > MAX_ATTEMPTS:
            yield rule.finding(
                f"agent {spec.name!r} makes up to {attempts} attempts: during an outage that "
                "multiplies the load on the service (a retry storm)",
                f"Retry(attempts=3..5) (at most {MAX_ATTEMPTS}), with a budget= shared per "
                "service; let the breaker and a pause wait out long outages",
                agent=spec.name,
            )


def _long_reason(workflow: Workflow, config: DeploymentConfig) -> str | None:
    """Why runs of `workflow` are long (they outlive a process), or ``None``."""
    if workflow.deadline is None:
        return "its runs have no deadline"
    if workflow.deadline > config.long_run:
        return f"its runs may take {workflow.deadline:g} s (> {config.long_run:g} s)"
    waiting = [s.name for s in workflow if s.on_exhausted in ("pause", "review")]
    if waiting:
        return f"its runs wait (paused or for review) at {', '.join(waiting)}"
    return None


@_rule(
    "FB006",
    "long-runs-without-durable-store",
    Severity.ERROR,
    "long or waiting runs on a store that does not survive a restart",
)
def _durable(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    why = _long_reason(workflow, config)
    scheme = config.store_scheme
    if why is None or scheme is None:
        return
    if scheme == "memory":
        yield rule.finding(
            f"workflow {workflow.name!r}: {why}, but the store is {config.store!r}: a restart "
            "loses every run in flight, its checkpoints and its dead letters",
            "use a durable store: sqlite:///PATH on one host, postgresql://... for many",
        )
    elif scheme == "redis":
        yield rule.finding(
            f"workflow {workflow.name!r}: {why}, on Redis, which suits short runs (keys "
            "expire; persistence depends on the server's configuration)",
            "use postgresql://... for long runs and audit trails, or check Redis' AOF settings",
            severity=Severity.WARNING,
        )


@_rule("FB007", "no-store-configured", Severity.WARNING, "no checkpoint store configured")
def _store(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    if config.store is None:
        yield rule.finding(
            f"workflow {workflow.name!r}: no store is configured, so runs go to the default "
            "SQLite file ./.firebreak/firebreak.db on whichever host runs them",
            "name the store: [store] url in firebreak.toml, $FIREBREAK_STORE or --store",
        )


@_rule(
    "FB008",
    "no-dead-letter-destination",
    Severity.ERROR,
    "no dead-letter destination, or one that dies with the process",
)
def _dlq(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    if config.dlq is None:
        yield rule.finding(
            f"workflow {workflow.name!r}: no dead-letter destination is configured: nobody "
            "is told where failed runs wait for replay",
            '[dlq] destination = "store" (the store\'s dead-letter queue) in firebreak.toml',
        )
    elif config.dlq == "store" and config.store_scheme == "memory":
        yield rule.finding(
            f"workflow {workflow.name!r}: dead letters go to the store's queue, but the store "
            "is in memory: failed runs vanish with the process",
            "use a durable store, or send dead letters to a durable [dlq] destination",
        )


@_rule("FB009", "no-metrics-exporter", Severity.ERROR, "no metrics exporter")
def _metrics(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    if config.metrics is None:
        yield rule.finding(
            f"workflow {workflow.name!r}: no metrics exporter: open circuits, retry storms "
            "and a growing dead-letter queue go unseen",
            '[metrics] exporter = "prometheus" (or "otel") in firebreak.toml',
        )


def kebab(name: str) -> str:
    """``CircuitOpenError`` → ``circuit-open-error``; ``HTTPError`` → ``http-error``."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", name).replace("_", "-").lower()


def error_types(workflow: Workflow, config: DeploymentConfig) -> list[str]:
    """The error types runs of `workflow` can fail or stop with, which need a runbook.

    Firebreak's own, as the workflow's options make them possible, the exceptions defined
    in the modules of the agents' functions, and those the config names.
    """
    specs = list(workflow)
    found = ["StepTimeout"]
    if workflow.deadline is not None:
        found.append("DeadlineExceeded")
    if any(s.breaker for s in specs):
        found.append("CircuitOpenError")
    if any(s.bulkhead for s in specs):
        found.append("Overloaded")
    if any(s.validate is not None for s in specs):
        found.append("InvalidOutput")
    if any(s.fallbacks for s in specs):
        found.append("FallbackExhausted")
    if workflow.input_schema is not None:
        found.append("InvalidInput")
    if any(s.on_exhausted == "review" for s in specs):
        found.append("NeedsHuman")
    modules = {getattr(f, "__module__", None) for s in specs for f in (s.fn, *s.fallbacks)}
    for module_name in sorted(m for m in modules if m):
        module = sys.modules.get(module_name)
        values = vars(module).values() if module is not None else ()
        found.extend(
            value.__name__
            for value in values
            if isinstance(value, type)
            and issubclass(value, Exception)
            and value.__module__ == module_name
        )
    found.extend(config.errors)
    return list(dict.fromkeys(found))


@_rule("FB010", "error-without-runbook", Severity.WARNING, "an error type with no runbook")
def _runbooks(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    directory = config.runbooks
    for name in error_types(workflow, config):
        slug = kebab(name)
        candidates = [directory / f"{slug}.md"]
        if slug.endswith("-error"):
            candidates.append(directory / f"{slug.removesuffix('-error')}.md")
        if not any(path.is_file() for path in candidates):
            shown = _shown(candidates[0])
            yield rule.finding(
                f"workflow {workflow.name!r} can stop with {name}, which has no runbook ({shown})",
                f"write {shown}: what {name} means, how to confirm it, what to do",
            )


def _shown(path: Path) -> str:
    """`path` relative to the current directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _invents(default: Any) -> bool:
    if default is None:
        return False
    if isinstance(default, str | bytes | list | tuple | dict | set | frozenset):
        return len(default) > 0
    return True


@_rule(
    "FB011",
    "default-invents-data",
    Severity.ERROR,
    "an optional agent's default invents data (anything but None or empty)",
)
def _defaults(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:  # noqa: ARG001
    for spec in workflow:
        if not spec.critical and spec.has_default and _invents(spec.default):
            shown = repr(spec.default)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            yield rule.finding(
                f"optional agent {spec.name!r} degrades to {shown}, which looks like real "
                "output: dependents cannot tell an invented value from a real one",
                "default=None (or an empty value); dependents see ctx.degraded and decide",
                agent=spec.name,
            )


def _payment_like(spec: AgentSpec, config: DeploymentConfig) -> bool:
    if is_payment(spec.fn) or spec.name in config.payments:
        return True
    text = f"{spec.name} {spec.breaker or ''} {getattr(spec.fn, '__doc__', None) or ''}"
    return bool(_PAYMENT_WORDS.search(text))


@_rule(
    "FB012",
    "payment-retried-too-often",
    Severity.ERROR,
    f"a critical payment-like step retried more than {PAYMENT_ATTEMPTS} times in all",
)
def _payments(rule: Rule, workflow: Workflow, config: DeploymentConfig) -> Iterator[Finding]:
    for spec in workflow:
        attempts = spec.retry.attempts if spec.retry is not None else 1
        if spec.critical and attempts > PAYMENT_ATTEMPTS and _payment_like(spec, config):
            yield rule.finding(
                f"agent {spec.name!r} looks like it moves money and makes up to {attempts} "
                "attempts: a payment that timed out may have gone through",
                f"Retry(attempts={PAYMENT_ATTEMPTS}) at most, an idempotency key "
                "(ctx.idempotency_key) on the call, then on_exhausted='review'",
                agent=spec.name,
            )
