from __future__ import annotations

import pytest

import firebreak as fb
from firebreak.events import FallbackUsed
from firebreak.testing import capture_events


async def primary(prompt: str) -> str:
    raise TimeoutError("primary model timed out")


async def backup(prompt: str) -> str:
    return f"backup:{prompt}"


async def broken(prompt: str) -> str:
    raise fb.InvalidOutput("not JSON")


async def test_first_working_alternative_answers_with_an_event() -> None:
    with capture_events() as seen:
        result = await fb.Fallback(broken, backup, name="llm").call(primary, "hi")
    assert result == "backup:hi"
    used = [e for e in seen if isinstance(e, FallbackUsed)]
    assert [(e.index, e.error_type) for e in used] == [(1, "TimeoutError"), (2, "InvalidOutput")]


async def test_default_when_everything_failed() -> None:
    assert await fb.Fallback(broken, default=None).call(primary, "x") is None


async def test_all_failed_raises_with_every_error_in_order() -> None:
    with pytest.raises(fb.FallbackExhausted) as info:
        await fb.Fallback(broken).call(primary, "x")
    assert [type(e) for e in info.value.errors] == [TimeoutError, fb.InvalidOutput]
    assert isinstance(info.value.__cause__, fb.InvalidOutput)


async def test_errors_outside_on_propagate_at_once() -> None:
    with pytest.raises(TimeoutError):
        await fb.Fallback(backup, on=KeyError).call(primary, "x")


async def test_success_uses_no_fallback() -> None:
    with capture_events() as seen:
        assert await fb.Fallback(broken).call(backup, "x") == "backup:x"
    assert seen == []


async def test_decorator_form() -> None:
    @fb.Fallback(backup)
    async def ask(prompt: str) -> str:
        raise ConnectionError

    assert await ask("q") == "backup:q"
