"""The stores' JSON text: compact, non-ASCII kept, the same as `json.dumps` would write."""

from __future__ import annotations

import json

import pytest

from firebreak.store._rules import dumps, loads

VALUES = [
    "plain",
    "ünïcödé and 漢字 kept as they are",
    'quotes " and \\ backslashes',
    "control \n\t\x00\x1f characters",
    "",
    0,
    -7,
    2**80,  # beyond 64 bits
    True,  # a bool is not an int here: true, not 1
    None,
    1.5,
    [1, "a", None],
    {"k": "ü", "n": {"deep": [True, False]}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_writes_what_json_dumps_writes(value: object) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert dumps(value) == expected  # type: ignore[arg-type]
    assert loads(dumps(value)) == value  # type: ignore[arg-type]


def test_a_str_subclass_and_an_int_subclass_are_written_as_json() -> None:
    class Name(str):
        __slots__ = ()

    class Count(int):
        pass

    assert dumps(Name("x")) == '"x"'  # type: ignore[arg-type]
    assert dumps(Count(3)) == "3"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Out of range"):
        dumps(float("nan"))
