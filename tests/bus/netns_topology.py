"""Three "hosts" on one machine for the multi-host bus test: network namespaces and veths.

`Topology` builds a broker, an orchestrator and a worker namespace, each with its own
address, joined by a bridge that lives in the broker namespace (a small LAN)::

    fb-<tag>-orch  127.77.0.2 ──veth──┐
                                      br0 127.77.0.1  (fb-<tag>-broker)
    fb-<tag>-work  127.77.0.3 ──veth──┘

Addresses are loopback-range only (127.77.0.0/24), so nothing is routable beyond the box.
Linux treats 127/8 on anything but ``lo`` as martian and drops it; each namespace sets
``net.ipv4.conf.{all,default,<if>}.route_localnet=1`` so the kernel routes it over the
veths, and drops the blanket ``local 127.0.0.0/8 dev lo`` route (only ``127.0.0.1`` stays
local), so ``127.77.0.1`` seen from a worker is the broker across the wire, never itself.

`run` starts a process inside a namespace with a hostname of its own (a UTS namespace via
``unshare --uts``), so owner and consumer names differ as they would on separate hosts.
`close` kills every process it started (by PID) and deletes the namespaces, which takes
their veths and the bridge with them; it is safe to call after a partial `create`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["SUBNET", "NetnsUnavailable", "Topology"]

SUBNET = "127.77.0"
"""The /24 the three namespaces share (loopback range: never routed off the machine)."""
ADDRESSES = {"broker": f"{SUBNET}.1", "orch": f"{SUBNET}.2", "work": f"{SUBNET}.3"}


class NetnsUnavailable(RuntimeError):
    """Network namespaces cannot be made here (not root, no iproute2, no CAP_NET_ADMIN)."""


def _ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, check=False)  # noqa: S603, S607
    if done.returncode != 0:
        raise NetnsUnavailable(f"`ip {' '.join(args)}` failed: {done.stderr.strip()}")


@dataclass
class Topology:
    """The namespaces of one test; use as a context manager (`create` ... `close`)."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    created: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def ns(self, role: str) -> str:
        """The namespace name of a role: ``broker``, ``orch`` or ``work``."""
        return f"fb-{self.tag}-{role}"

    @staticmethod
    def address(role: str) -> str:
        """The role's IPv4 address."""
        return ADDRESSES[role]

    def create(self) -> None:
        """Build the namespaces, bridge, veths, addresses and routes; raises
        `NetnsUnavailable` (after undoing what was made) if any step is refused."""
        if shutil.which("ip") is None:
            raise NetnsUnavailable("iproute2's `ip` is not installed")
        if hasattr(os, "geteuid") and os.geteuid() != 0:
            raise NetnsUnavailable("creating network namespaces needs root (CAP_SYS_ADMIN)")
        try:
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        for role in ADDRESSES:
            _ip("netns", "add", self.ns(role))
            self.created.append(self.ns(role))
            self._localnet(role, "all", "default")
            _ip("-n", self.ns(role), "link", "set", "lo", "up")
            # Only 127.0.0.1 stays on lo: the rest of 127/8 may live on the veths.
            with contextlib.suppress(NetnsUnavailable):
                _ip("-n", self.ns(role), "route", "del", "local", "127.0.0.0/8", "dev", "lo",
                    "table", "local")  # fmt: skip
        broker = self.ns("broker")
        _ip("-n", broker, "link", "add", "br0", "type", "bridge")
        self._localnet("broker", "br0")
        _ip("-n", broker, "addr", "add", f"{ADDRESSES['broker']}/24", "dev", "br0")
        _ip("-n", broker, "link", "set", "br0", "up")
        for role in ("orch", "work"):
            inner, outer = f"fb{self.tag}{role[0]}", f"fb{self.tag}{role[0]}b"
            # Both ends are made directly inside their namespaces: nothing in the host's.
            _ip("link", "add", inner, "netns", self.ns(role), "type", "veth",
                "peer", "name", outer, "netns", broker)  # fmt: skip
            _ip("-n", broker, "link", "set", outer, "master", "br0")
            _ip("-n", broker, "link", "set", outer, "up")
            self._localnet(role, inner)
            _ip("-n", self.ns(role), "addr", "add", f"{ADDRESSES[role]}/24", "dev", inner)
            _ip("-n", self.ns(role), "link", "set", inner, "up")

    def _localnet(self, role: str, *interfaces: str) -> None:
        settings = [f"net.ipv4.conf.{i}.route_localnet=1" for i in interfaces]
        done = subprocess.run(  # noqa: S603
            ["ip", "netns", "exec", self.ns(role), "sysctl", "-qw", *settings],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise NetnsUnavailable(f"route_localnet in {self.ns(role)}: {done.stderr.strip()}")

    def run(
        self,
        role: str,
        argv: Sequence[str],
        *,
        log: Path,
        cwd: Path,
        env: Mapping[str, str],
        hostname: str | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start `argv` in the role's namespace (with its own hostname), output to `log`.

        ``ip netns exec``, ``unshare`` and ``sh`` each exec the next, so the returned
        process's PID is the command's own.
        """
        host = hostname or f"fb-{self.tag}-{role}"
        command = [
            "ip", "netns", "exec", self.ns(role), "unshare", "--uts",
            "sh", "-c", 'hostname "$0" && exec "$@"', host, *argv,
        ]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: S603
                command, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT
            )
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        """Kill every process started here (by PID), then delete the namespaces."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        for name in reversed(self.created):
            for _ in range(20):  # a dying process may hold the namespace for a moment
                try:
                    _ip("netns", "del", name)
                    break
                except NetnsUnavailable:
                    time.sleep(0.05)
        self.created.clear()

    def leftovers(self) -> list[str]:
        """Namespaces and host interfaces of this tag still present (should be none)."""
        if shutil.which("ip") is None:
            return []
        names = subprocess.run(
            ["ip", "-o", "netns", "list"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout.split()
        links = subprocess.run(
            ["ip", "-o", "link", "show"],  # noqa: S607
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        return [n for n in names if self.tag in n] + (
            [f"host link fb{self.tag}*"] if f"fb{self.tag}" in links else []
        )

    def __enter__(self) -> Topology:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
