"""`firebreak.testing` as a user sees it: the runner, the env, `raises`, the public names."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import firebreak.testing as fbt
from firebreak.store import Lease, MemoryStore, SQLiteStore, StepRecord, WallClock
from firebreak.testing import (
    CHECKS,
    CheckSkipped,
    StoreMaker,
    conformance_env,
    raises,
    run_conformance,
)

PERSISTENT_ONLY = {
    "check_resume_sees_committed_steps",
    "check_two_stores_fence_each_other",
    "check_two_stores_race_on_commits_and_state",
}


def test_public_names_are_exactly_these() -> None:
    assert fbt.__all__ == [
        "CHECKS",
        "Check",
        "CheckSkipped",
        "ConformanceEnv",
        "FakeClock",
        "MemoryStore",
        "Raised",
        "StoreFactory",
        "StoreMaker",
        "capture_events",
        "conformance_env",
        "raises",
        "run_conformance",
    ]
    assert fbt.MemoryStore is MemoryStore


def test_checks_have_stable_unique_documented_names() -> None:
    names = [check.__name__ for check in CHECKS]
    assert len(names) == len(set(names)) == 41
    assert all(name.startswith("check_") for name in names)
    assert all(check.__doc__ for check in CHECKS)
    assert {"check_commit_is_idempotent", "check_stale_owner_commit_is_refused"} <= set(names)


def test_the_package_never_imports_pytest() -> None:
    code = "import sys, firebreak.testing; sys.exit('pytest' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0  # noqa: S603


def test_runner_refuses_to_run_without_assertions() -> None:
    code = (
        "import asyncio; from firebreak.testing import MemoryStore, run_conformance\n"
        "asyncio.run(run_conformance(lambda clock: MemoryStore(clock=clock)))"
    )
    proc = subprocess.run(  # noqa: S603
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, check=False
    )
    assert proc.returncode != 0
    assert "without -O" in proc.stderr


async def test_memory_store_passes_and_skips_only_what_needs_persistence() -> None:
    results = await run_conformance(lambda clock: MemoryStore(clock=clock))
    assert [name for name, _ in results] == [check.__name__ for check in CHECKS]
    skipped = {name for name, exc in results if isinstance(exc, CheckSkipped)}
    assert skipped == PERSISTENT_ONLY
    assert [(n, e) for n, e in results if e is not None and n not in skipped] == []


async def test_a_namespace_factory_runs_every_check(tmp_path: Path) -> None:
    made: list[SQLiteStore] = []

    @asynccontextmanager
    async def namespace(clock: WallClock) -> AsyncIterator[StoreMaker]:
        path = tmp_path / f"ns{len(made)}.db"

        def make() -> SQLiteStore:
            made.append(SQLiteStore(path, clock=clock))
            return made[-1]

        yield make
        path.unlink()  # the namespace is deleted on exit

    results = await run_conformance(namespace, checks=CHECKS[-6:])
    assert results == [(check.__name__, None) for check in CHECKS[-6:]]
    assert len(made) == 6 + 3  # one per check, plus a second instance for the three of them
    assert _files(tmp_path) == []


def _files(path: Path) -> list[Path]:
    return list(path.iterdir())


class _ForgetfulStore(MemoryStore):
    """Reports every commit as new: at-least-once delivery would run steps twice."""

    async def commit_step(self, lease: Lease, step: StepRecord) -> bool:
        await super().commit_step(lease, step)
        return True


async def test_a_broken_store_is_reported_not_raised() -> None:
    results = dict(await run_conformance(lambda clock: _ForgetfulStore(clock=clock)))
    failed = {n for n, e in results.items() if e is not None and not isinstance(e, CheckSkipped)}
    assert failed == {
        "check_commit_is_idempotent",
        "check_concurrent_duplicate_commits_exactly_one_wins",
        "check_commit_and_finish_agrees_with_commit_then_finish",  # finishes on a duplicate
    }
    assert isinstance(results["check_commit_is_idempotent"], AssertionError)


class _NoLeaseAndStep(MemoryStore):
    """A store without the optional `SupportsLeaseAndStep`."""

    get_lease_and_step = None  # type: ignore[assignment]  # a None method fails isinstance


class _StaleLeaseAndStep(MemoryStore):
    """Offers `get_lease_and_step` but keeps answering with the first lease it saw."""

    seen: Lease | None = None

    async def get_lease_and_step(
        self, run_id: str, agent: str
    ) -> tuple[Lease | None, StepRecord | None]:
        lease, step = await super().get_lease_and_step(run_id, agent)
        self.seen = self.seen or lease
        return self.seen, step


async def test_an_optional_ability_is_checked_only_where_offered() -> None:
    """No `get_lease_and_step`: its check skips; a wrong one (a stale lease) fails it."""
    name = "check_lease_and_step_agree_with_run_and_steps"
    absent = dict(await run_conformance(lambda clock: _NoLeaseAndStep(clock=clock)))
    assert isinstance(absent[name], CheckSkipped)
    wrong = dict(await run_conformance(lambda clock: _StaleLeaseAndStep(clock=clock)))
    assert isinstance(wrong[name], AssertionError)
    assert [n for n, e in wrong.items() if e is not None and not isinstance(e, CheckSkipped)] == [
        name
    ]


async def test_a_store_on_another_clock_is_refused() -> None:
    with pytest.raises(ValueError, match="clock its factory is given"):
        async with conformance_env(lambda clock: MemoryStore()):
            pass


async def test_env_gives_a_set_up_store_on_a_hand_moved_clock() -> None:
    async with conformance_env(lambda clock: MemoryStore(clock=clock)) as env:
        assert env.store.clock() == env.wall.wall()
        await env.wall.sleep(0)
        env.wall.advance(30)
        assert env.store.clock() == env.wall.wall() == 1_700_000_030.0
        assert not env.persistent
        with pytest.raises(CheckSkipped, match="not persistent"):
            env.make_store()


def test_raises_catches_and_matches() -> None:
    with raises(KeyError) as caught:
        {}["k"]
    assert caught.value.args == ("k",)
    with raises(LookupError, match="^'k'$"):  # a subclass counts
        {}["k"]


def test_raises_fails_on_no_error_or_no_match() -> None:
    with pytest.raises(AssertionError, match="did not raise KeyError"), raises(KeyError):
        pass
    with (
        pytest.raises(AssertionError, match="does not match 'nope'"),
        raises(KeyError, match="nope"),
    ):
        {}["k"]
    with pytest.raises(ZeroDivisionError), raises(KeyError):  # other errors propagate
        _ = 1 / 0
    with pytest.raises(AssertionError, match="not raised yet"), raises(KeyError) as early:
        early.value  # noqa: B018
