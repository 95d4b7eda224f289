"""Bus URLs and connecting: a typo or a server out of reach is one clear line, at once."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from firebreak.bus import open_bus
from firebreak.bus.base import setup_bus
from firebreak.cli import app
from firebreak.errors import BusError


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis://127.0.0.1/0?prefx=mine", "'prefx' is unknown: did you mean 'prefix'?"),
        (
            "amqp://guest:guest@127.0.0.1/?visiblity_timeout=5",
            "'visiblity_timeout' is unknown: did you mean 'visibility_timeout'?",
        ),
        ("redis://127.0.0.1/0?bogus=1", "an option redis-py does not know"),
    ],
)
def test_a_misspelt_or_unknown_option_is_refused_when_the_url_is_read(
    url: str, message: str
) -> None:
    """A typo in `prefix` would put workers on the shared default queues without a word."""
    with pytest.raises(ValueError, match=message):
        open_bus(url)


def test_options_of_the_client_library_pass_through() -> None:
    assert open_bus("redis://127.0.0.1/0?socket_timeout=2&prefix=mine").prefix == "mine"  # type: ignore[attr-defined]
    assert open_bus("amqp://guest:guest@127.0.0.1/?heartbeat=30").prefix == "firebreak"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:1/0",
        "amqp://guest:secret@127.0.0.1:1/",
        "nats://127.0.0.1:1",
        "kafka://127.0.0.1:1",
    ],
)
async def test_a_bus_out_of_reach_is_one_bus_error_naming_it_without_its_password(
    url: str,
) -> None:
    bus = open_bus(url)
    with pytest.raises(BusError) as caught:
        await setup_bus(bus)
    message = str(caught.value)
    assert message.startswith("bus ")
    assert "127.0.0.1:1" in message
    assert "cannot connect" in message
    assert "secret" not in message
    assert "\n" not in message
    await bus.close()


def test_a_worker_whose_bus_is_out_of_reach_exits_6_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(Path(__file__).parent)  # where `flows` is
    monkeypatch.setattr(sys, "path", list(sys.path))  # the CLI puts the cwd on it
    result = CliRunner().invoke(
        app,
        ["worker", "flows:batch", "--bus", "redis://127.0.0.1:1/0", "--store", "memory://"],
        catch_exceptions=False,
    )
    assert result.exit_code == 6, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: bus redis://127.0.0.1:1/0: cannot connect:")
    assert "Traceback" not in result.stderr
