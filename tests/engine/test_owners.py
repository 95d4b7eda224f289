"""Default orchestrator ids, and telling a lease holder gone from this machine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firebreak.engine._owners import _PLACE, default_owner, gone

pytestmark = pytest.mark.skipif(_PLACE is None, reason="needs Linux's /proc (boot id, PID ns)")


def _as(pid: int) -> str:
    """This machine's default owner id, for process `pid`."""
    host, _, random, place = default_owner().split(":")
    return f"{host}:{pid}:{random}:{place}"


def test_the_default_owner_names_host_process_and_place() -> None:
    _host, pid, random, place = default_owner().split(":")
    assert pid == str(os.getpid())
    assert len(random) == 6
    assert place == _PLACE
    assert default_owner() != default_owner()  # two engines of one process: two ids


def test_a_live_process_and_this_one_are_not_gone() -> None:
    assert not gone(_as(os.getpid()))
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as proc:
        try:
            assert not gone(_as(proc.pid))
        finally:
            proc.kill()


def test_a_killed_process_is_gone_as_a_zombie_and_once_reaped() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    proc.kill()
    while _state(proc.pid) != "Z":
        pass  # until the kill has landed: a zombie, not reaped yet
    assert gone(_as(proc.pid))
    proc.wait()
    assert gone(_as(proc.pid))


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    return stat.rsplit(")", 1)[-1].split()[0]


@pytest.mark.parametrize(
    "owner",
    [
        None,
        "orchestrator-a",  # chosen by a user: nothing is assumed
        "host:123:abcdef",  # another platform's default id (no place)
        "host:notapid:abcdef:00000000",
    ],
)
def test_ids_that_say_nothing_about_this_machine_are_never_gone(owner: str | None) -> None:
    assert not gone(owner)


def test_a_dead_pid_of_another_boot_or_namespace_is_not_gone() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    host, pid, random, _ = _as(proc.pid).split(":")
    assert gone(f"{host}:{pid}:{random}:{_PLACE}")
    assert not gone(f"{host}:{pid}:{random}:{'0' * 8 if _PLACE != '0' * 8 else '1' * 8}")


def test_a_dead_pid_under_another_host_name_is_not_gone() -> None:
    """A clone of this VM keeps its boot id and PID namespace, not its host name."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    _host, pid, random, place = _as(proc.pid).split(":")
    assert not gone(f"clone-of-this-vm:{pid}:{random}:{place}")


def test_an_engine_forked_into_a_child_leases_under_the_childs_own_id() -> None:
    """A daemon's double fork: with the parent's PID in its id, the child's leases would
    look abandoned, and be taken over, once the parent exits."""
    import firebreak as fb  # noqa: PLC0415

    engine = fb.Engine(fb.store.MemoryStore())
    parent_id = engine.owner
    assert parent_id.split(":")[1] == str(os.getpid())
    assert engine.owner == parent_id  # one id for the life of the process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its engine's id, and leave at once
        os.write(write, engine.owner.encode())
        os._exit(0)
    os.close(write)
    child_id = os.read(read, 200).decode()
    os.close(read)
    os.waitpid(pid, 0)
    assert child_id.split(":")[1] == str(pid)
    assert gone(child_id)  # the child has exited: its id says so
    assert not gone(parent_id)
    assert fb.Engine(fb.store.MemoryStore(), owner="orch-7").owner == "orch-7"


async def test_a_replay_breaks_the_lease_of_a_process_gone_from_this_machine() -> None:
    """Killed between its dead letter and its run's end, an orchestrator left the lease
    held: `dlq replay` takes the run over at once instead of waiting out the lease."""
    import firebreak as fb  # noqa: PLC0415

    wf = fb.Workflow("replayed")
    broken = [True]

    @wf.agent
    async def post(ctx: fb.Context, x: int) -> int:
        if broken[0]:
            raise fb.Permanent("ledger closed")
        return x + 1

    async with fb.store.MemoryStore() as store:
        engine = fb.Engine(store)
        for run_id in ("dead-holder", "live-holder"):
            assert (await engine.run(wf, 1, run_id=run_id)).status == "failed"
        dead = await store.acquire_lease("dead-holder", _as(_dead_pid()), 30.0)  # as it was left
        await store.acquire_lease("live-holder", "orch-7", 30.0)  # an id that tells nothing
        broken[0] = False
        replayed = await engine.replay("dead-holder", wf)
        assert (replayed.status, replayed["post"]) == ("succeeded", 2)
        late = fb.store.StepRecord(run_id="dead-holder", agent="post", status="succeeded")
        with pytest.raises(fb.errors.StaleLease):  # whatever the dead one left unsent
            await store.commit_step(dead, late)
        with pytest.raises(fb.errors.LeaseHeld):  # a holder that may be alive is waited out
            await engine.replay("live-holder", wf)


def _dead_pid() -> int:
    """The PID of a process of this machine that has exited."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


async def test_a_lease_another_process_is_breaking_at_the_same_moment_is_still_taken() -> None:
    """Two processes of this machine resume one abandoned run: the other one holds the
    lease under the dead owner's id for a moment, while it breaks it; this one breaks it
    again rather than give up with `LeaseHeld` naming a dead process."""
    import firebreak as fb  # noqa: PLC0415

    dead = _as(_dead_pid())

    class Racing(fb.store.MemoryStore):
        """After this engine's break, the other breaker takes the lease as the dead id."""

        raced = False

        async def release_lease(self, lease: fb.store.Lease) -> None:
            await super().release_lease(lease)
            if lease.owner == dead and not self.raced:
                self.raced = True
                await self.acquire_lease(lease.run_id, dead, 30.0)  # the other breaker

    wf = fb.Workflow("contested")

    @wf.agent
    async def post(ctx: fb.Context, x: int) -> int:
        return x + 1

    async with Racing() as store:
        await store.create_run("r1", "contested", 1)
        await store.acquire_lease("r1", dead, 30.0)  # as the killed process left it
        result = await fb.Engine(store).run(wf, run_id="r1")
        assert store.raced
        assert (result.status, result["post"]) == ("succeeded", 2)
