"""Run the whole test suite: bring up the servers it needs, then pytest.

This is what ``make test`` and ``.ci/run`` call. Each server test finds its server through
an environment URL (defaults: the standard loopback ports). For every server that does not
answer there, a throwaway one is started from the installed binary on a free port, its URL
exported to the tests, and stopped afterwards; only what this script started is stopped.
One line says which servers are used and which could not be had. Extra arguments go to
pytest.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Server:
    """A server the tests may need: its env variable, default URL, and how to start one."""

    name: str
    env: str
    default: str
    start: Callable[[contextlib.ExitStack], str | None]
    missing: str = "no server binary installed"


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}"


def _reachable(url: str, timeout: float = 1.0) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout):
            return True
    except OSError:
        return False


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, seconds: float = 15.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if _reachable(f"tcp://127.0.0.1:{port}", 0.2):
            return True
        time.sleep(0.05)
    return False


def _spawn(
    stack: contextlib.ExitStack, cmd: list[str], **kwargs: object
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(  # noqa: S603 - installed server binaries, our own arguments
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kwargs,  # type: ignore[call-overload]
    )

    def stop() -> None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    stack.callback(stop)
    return proc


def _start_redis(stack: contextlib.ExitStack) -> str | None:
    binary = shutil.which("redis-server")
    if binary is None:
        return None
    port = _free_port()
    _spawn(stack, [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "no"])  # fmt: skip
    return f"redis://127.0.0.1:{port}/15" if _wait_port(port) else None


def _start_nats(stack: contextlib.ExitStack) -> str | None:
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        return None
    store = Path(tempfile.mkdtemp(prefix="firebreak-nats-"))
    stack.callback(shutil.rmtree, store, ignore_errors=True)
    port = _free_port()
    _spawn(stack, [binary, "-a", "127.0.0.1", "-p", str(port), "-js", "-sd", str(store)])
    return f"nats://127.0.0.1:{port}" if _wait_port(port) else None


def _start_rabbitmq(stack: contextlib.ExitStack) -> str | None:
    # A throwaway RabbitMQ would need its own node name, ports and epmd; the machine's
    # own server is started instead (`rabbitmq-server -detached`, ~12 s) and stopped after.
    server, ctl = shutil.which("rabbitmq-server"), shutil.which("rabbitmqctl")
    if server is None or ctl is None:
        return None
    null = subprocess.DEVNULL
    started = subprocess.run([server, "-detached"], check=False, stdout=null, stderr=null)  # noqa: S603
    if started.returncode != 0:
        return None
    stack.callback(subprocess.run, [ctl, "stop"], check=False, stdout=null, stderr=null)
    return "amqp://guest:guest@127.0.0.1:5672/" if _wait_port(5672, 60) else None


def _as_postgres() -> list[str]:
    # initdb and pg_ctl refuse to run as root: drop to the postgres user when we are root.
    if os.geteuid() == 0:
        return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups"]
    return []


def _start_postgres(stack: contextlib.ExitStack) -> str | None:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is None or pg_ctl is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="firebreak-pg-"))
    stack.callback(shutil.rmtree, root, ignore_errors=True)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port = root / "data", _free_port()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    subprocess.run(  # noqa: S603
        [*_as_postgres(), initdb, "-D", str(data), "-U", "postgres", "--auth=trust"],
        check=True, **quiet,  # type: ignore[arg-type]
    )  # fmt: skip
    subprocess.run(  # noqa: S603
        [*_as_postgres(), pg_ctl, "-D", str(data), "-w", "-l", str(root / "log"), "-o",
         f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        check=True, **quiet,  # type: ignore[arg-type]
    )  # fmt: skip
    stack.callback(
        subprocess.run,
        [*_as_postgres(), pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
        **quiet,
    )
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


SERVERS = [
    Server("redis", "FIREBREAK_TEST_REDIS_URL", "redis://127.0.0.1:6379/15", _start_redis),
    Server("nats", "FIREBREAK_TEST_NATS_URL", "nats://127.0.0.1:4222", _start_nats),
    Server(
        "rabbitmq",
        "FIREBREAK_TEST_AMQP_URL",
        "amqp://guest:guest@127.0.0.1:5672/",
        _start_rabbitmq,
        missing="rabbitmq-server is not installed",
    ),
    Server(
        "postgres",
        "FIREBREAK_TEST_POSTGRES_URL",
        "postgresql://postgres@127.0.0.1:5432/postgres",
        _start_postgres,
    ),
]


def _ensure_promtool() -> str:
    """Make sure `promtool` (it checks the shipped alert rules) is here; install it if we can."""
    if shutil.which("promtool"):
        return "promtool found"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return "promtool: NOT AVAILABLE (install Debian's prometheus package)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "prometheus"]
    for cmd in (["apt-get", "update"], install):
        done = subprocess.run(  # noqa: S603 - Debian's package manager, fixed arguments
            cmd, env=env, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        if done.returncode != 0:
            return "promtool: NOT AVAILABLE (apt-get install prometheus failed)"
    return "promtool installed" if shutil.which("promtool") else "promtool: NOT AVAILABLE"


@contextlib.contextmanager
def servers() -> Iterator[list[str]]:
    """Make sure every server answers; yield the notes of the one summary line."""
    notes: list[str] = []
    with contextlib.ExitStack() as stack:
        for server in SERVERS:
            url = os.environ.get(server.env, server.default)
            if _reachable(url):
                notes.append(f"{server.name} at {_where(url)}")
                continue
            try:
                started = server.start(stack)
            except (OSError, subprocess.CalledProcessError) as exc:
                started, why = None, str(exc)
            else:
                why = (
                    "not started here: run `rabbitmq-server -detached`"
                    if server.name == "rabbitmq"
                    else "no server binary installed"
                )
                why = why if started is None else ""
            if started is None:
                notes.append(
                    f"{server.name}: NOT AVAILABLE ({why}; its tests skip, or fail if CI=true)"
                )
                continue
            os.environ[server.env] = started
            notes.append(f"{server.name} started at {_where(started)}")
        yield notes


def main() -> int:
    """Bring the servers up, run pytest over tests/, return its exit code."""
    with servers() as notes:
        notes.append(_ensure_promtool())
        print("test servers: " + "; ".join(notes), flush=True)  # noqa: T201
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *sys.argv[1:]]
        return subprocess.call(cmd)  # noqa: S603 - our own interpreter and arguments


if __name__ == "__main__":
    raise SystemExit(main())
