"""Orchestrator ids, and whether the one holding a lease is a process gone from this machine.

A lease outlives an orchestrator killed with ``kill -9``: nobody renews it, and until it
expires (`lease_ttl`) another orchestrator cannot tell a dead holder from a slow one. On
the same machine it can: the holder's process is gone. A default owner id names its
process and, on Linux, where it ran (this boot and this PID namespace, hashed), so that a
restarted process takes the run over at once instead of waiting out the lease. Anywhere
else, or for an owner id a user chose, nothing is assumed and the lease runs its course.
"""

from __future__ import annotations

import hashlib
import os
import socket
import uuid
from pathlib import Path

__all__ = ["default_owner", "gone"]


def _place() -> str | None:
    """This boot and PID namespace, hashed; ``None`` where they cannot be read (not Linux).

    Both, because a PID means one process only within one namespace of one boot: a
    container has a namespace of its own, and a reboot starts the numbers again.
    """
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text(encoding="ascii").strip()
        namespace = Path("/proc/self/ns/pid").readlink()
    except OSError:
        return None
    return hashlib.blake2s(f"{boot}/{namespace}".encode(), digest_size=4).hexdigest()


_PLACE = _place()


def default_owner() -> str:
    """An orchestrator id unique to this process: ``host:pid:random`` (``:place`` on Linux)."""
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
    return owner if _PLACE is None else f"{owner}:{_PLACE}"


def gone(owner: str | None) -> bool:
    """Whether `owner` is the default id of a process of this machine that has exited.

    ``False`` whenever that cannot be known for sure: an id of another machine, boot or
    PID namespace, an id a user chose, a process that still exists (or a new one that
    reuses its PID: then the lease expires as usual). A zombie, killed but not yet reaped
    by its parent, is gone.
    """
    parts = [] if owner is None or _PLACE is None else owner.split(":")
    if len(parts) != 4 or parts[3] != _PLACE or not parts[1].isdigit():
        return False
    if parts[0] != socket.gethostname():  # a clone of this VM (same boot id): not ours
        return False
    pid = int(parts[1])
    return pid != os.getpid() and not _exists(pid)  # our own pid: another engine of ours


def _exists(pid: int) -> bool:
    """Whether process `pid` exists and is not a zombie (this PID namespace)."""
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
        # "pid (comm) state ...": comm may hold spaces and parentheses, so after the last.
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except ProcessLookupError:
        return False
    except OSError:  # it exists, under another user (or /proc said nothing more)
        return True
    fields = stat.rsplit(")", 1)[-1].split()
    return not fields or fields[0] != "Z"
