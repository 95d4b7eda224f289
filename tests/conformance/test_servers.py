"""`require_server`: an unreachable server skips a test, or fails it under CI=true."""

from __future__ import annotations

import socket

import pytest

from servers import require_server


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_reachable_server_passes() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        require_server("redis", f"redis://127.0.0.1:{server.getsockname()[1]}/15")


def test_unreachable_server_skips_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    port = _free_port()
    with pytest.raises(pytest.skip.Exception, match=rf"redis server not reachable.*:{port}"):
        require_server("redis", f"redis://127.0.0.1:{port}/15")


def test_unreachable_server_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    port = _free_port()
    with pytest.raises(pytest.fail.Exception, match="CI=true, so this fails"):
        require_server("postgres", f"postgresql://postgres@127.0.0.1:{port}/postgres")


def test_a_url_without_a_known_port_is_a_bug() -> None:
    with pytest.raises(ValueError, match="no port"):
        require_server("thing", "thing://host")
