"""What an agent sees of its run: `Context`, and the run's versioned shared state."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from firebreak._jsonable import encode
from firebreak.clock import Clock
from firebreak.errors import StateConflict
from firebreak.store import JSON, CheckpointStore, Lease

__all__ = ["CompensationContext", "Context", "SharedState"]

if TYPE_CHECKING:
    from firebreak.engine.executor import StepCall

_log = logging.getLogger("firebreak.agent")


class SharedState:
    """The run's shared state: a JSON object with a version, written by compare-and-set.

    A write names the version it read; if another agent wrote in between, it fails with
    `StateConflict` — never a silent overwrite — and the engine retries the step attempt.
    `update` does the read-modify-write loop for you.

    >>> async def agent(ctx, extract):
    ...     await ctx.state.update(lambda s: {**s, "pages": s.get("pages", 0) + 1})
    """

    __slots__ = ("_lease", "_run_id", "_store")

    def __init__(self, store: CheckpointStore, run_id: str, lease: Lease | None = None) -> None:
        self._store = store
        self._run_id = run_id
        self._lease = lease  # fences every write: a driver that lost the run writes nothing

    async def get(self) -> tuple[int, dict[str, JSON]]:
        """The current version and data (version 0 and ``{}`` before the first write)."""
        return await self._store.get_state(self._run_id)

    async def set(self, data: Mapping[str, JSON], *, version: int) -> int:
        """Write `data` if the state is still at `version`; returns the new version.

        Raises:
            StateConflict: someone else wrote first.
        """
        # Checked as outputs are, so that every store takes or refuses the same data.
        checked = encode(data, what="shared state")
        return await self._store.cas_state(self._run_id, version, checked, lease=self._lease)

    async def update(
        self, change: Callable[[dict[str, JSON]], Mapping[str, JSON]], *, attempts: int = 10
    ) -> dict[str, JSON]:
        """Apply `change` to the latest state, re-reading on conflict; returns what it wrote."""
        for _ in range(attempts - 1):
            version, data = await self.get()
            new = dict(change(dict(data)))
            try:
                await self.set(new, version=version)
            except StateConflict:
                continue
            return new
        version, data = await self.get()
        new = dict(change(dict(data)))
        await self.set(new, version=version)
        return new


class Context:
    """Passed to every agent as its first argument.

    Attributes:
        run_id: the run.
        agent: this agent's name.
        attempt: 1 for the first attempt of this step in this process.
        input: the run's input.
        idempotency_key: ``run_id/agent`` — the same on every attempt, after every crash
            and resume: pass it to external services so a repeated call has one effect.
            In a compensation, ``run_id/agent/compensate``: the undo is another call.
        degraded: the dependencies that degraded to their default, with the reason.
        log: a logger whose records carry ``run_id`` and ``agent``.
        state: the run's versioned shared state.
    """

    __slots__ = ("_call", "_clock", "_log", "_state", "_store", "attempt")

    # The step's own fields are read from its `StepCall` when asked, not copied: one
    # context is made per attempt, and most agents read one or two of them, if any.
    def __init__(self, call: StepCall, attempt: int, store: CheckpointStore, clock: Clock) -> None:
        self._call = call
        self.attempt = attempt
        self._store = store
        self._clock = clock
        self._state: SharedState | None = None
        self._log: logging.LoggerAdapter[logging.Logger] | None = None

    @property
    def workflow(self) -> str:
        """The workflow's name."""
        return self._call.workflow

    @property
    def run_id(self) -> str:
        """The run."""
        return self._call.run_id

    @property
    def agent(self) -> str:
        """This agent's name."""
        return self._call.spec.name

    @property
    def input(self) -> Any:
        """The run's input."""
        return self._call.run_input

    @property
    def degraded(self) -> Mapping[str, str]:
        """The dependencies that degraded to their default, with the reason."""
        return self._call.degraded

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records carry the workflow, ``run_id`` and ``agent``."""
        if self._log is None:  # built on first use: most agents never log
            extra = {"workflow": self.workflow, "run_id": self.run_id, "agent": self.agent}
            self._log = logging.LoggerAdapter(_log, extra)
        return self._log

    @property
    def state(self) -> SharedState:
        """The run's versioned shared state."""
        if self._state is None:  # built on first use: most agents never share state
            self._state = SharedState(self._store, self.run_id, self._call.lease)
        return self._state

    @property
    def idempotency_key(self) -> str:
        """``run_id/agent``: the same on every attempt, after every crash and resume."""
        return f"{self.run_id}/{self.agent}"  # built on use: most agents never ask

    @property
    def deadline(self) -> float | None:
        """The run's deadline on the engine's monotonic clock, or ``None``."""
        return self._call.deadline

    def time_left(self) -> float | None:
        """Seconds until the run's deadline, or ``None`` when it has none."""
        deadline = self._call.deadline
        return None if deadline is None else deadline - self._clock.now()

    def __repr__(self) -> str:
        return f"Context(run_id={self.run_id!r}, agent={self.agent!r}, attempt={self.attempt})"


class CompensationContext(Context):
    """The context of a compensation: its idempotency key is not the agent's.

    A compensation can run again too (the process died after its effect, before it was
    recorded), so it needs a key; not the agent's own, which the service has already
    seen for the action being undone (a payment API would replay the charge, or refuse).
    """

    __slots__ = ()

    @property
    def idempotency_key(self) -> str:
        """``run_id/agent/compensate``: the same every time this compensation runs."""
        return f"{self.run_id}/{self.agent}/compensate"
