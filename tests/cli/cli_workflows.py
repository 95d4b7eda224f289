"""Workflows the CLI tests run by ``MODULE:WORKFLOW``: one per way a run can end.

Environment variables steer the flaky ones, so a test can fix "the service" between a
failed run and its replay without touching the code:

* ``FIREBREAK_TEST_CARD_DECLINED=1``: `charge` fails (the run fails, `reserve` is undone);
* ``FIREBREAK_TEST_LOOKUP_DOWN=1``: `lookup`'s service is down (the run pauses);
* ``FIREBREAK_TEST_SLOW_SECOND=1``: `second` takes 30 s (a test stops the process first).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import firebreak as fb

CARD_DECLINED = "FIREBREAK_TEST_CARD_DECLINED"
LOOKUP_DOWN = "FIREBREAK_TEST_LOOKUP_DOWN"
SLOW_SECOND = "FIREBREAK_TEST_SLOW_SECOND"

# -- succeeds --------------------------------------------------------------------------------

ok = fb.Workflow("cli-ok")


@ok.agent
async def double(ctx: fb.Context, data: dict[str, Any]) -> dict[str, int]:
    return {"n": data["n"] * 2}


@ok.agent(after=[double])
async def report(ctx: fb.Context, double: dict[str, int]) -> str:
    return f"n={double['n']}"


# -- degrades: an optional agent's service is down --------------------------------------------

degrading = fb.Workflow("cli-degrading")


@degrading.agent
async def fetch(ctx: fb.Context, data: dict[str, Any]) -> dict[str, Any]:
    return data


@degrading.agent(after=[fetch], critical=False, default=[])
async def enrich(ctx: fb.Context, fetch: dict[str, Any]) -> list[str]:
    raise ConnectionError("enrichment service down")


@degrading.agent(after=[fetch, enrich])
async def summarise(ctx: fb.Context, fetch: dict[str, Any], enrich: list[str]) -> dict[str, int]:
    return {"extras": len(enrich)}


# -- fails: a critical agent fails, the completed reservation is compensated ----------------

failing = fb.Workflow("cli-failing")
RELEASED: list[Any] = []
"""Orders whose reservation was undone (in this process)."""


async def release(ctx: fb.Context, output: dict[str, Any]) -> None:
    RELEASED.append(output["order"])


@failing.agent(compensate=release)
async def reserve(ctx: fb.Context, order: dict[str, Any]) -> dict[str, Any]:
    return {"order": order["id"]}


@failing.agent(after=[reserve])
async def charge(ctx: fb.Context, reserve: dict[str, Any], input: dict[str, Any]) -> str:  # noqa: A002
    if input.get("decline") or os.environ.get(CARD_DECLINED) == "1":
        raise fb.Permanent("card declined")
    return f"charged order {reserve['order']}"


@failing.agent(after=[charge])
async def ship(ctx: fb.Context, charge: str) -> str:
    return "shipped"


# -- needs a person --------------------------------------------------------------------------

review = fb.Workflow("cli-review")


def category(value: Any) -> str:
    if value not in ("invoice", "receipt"):
        raise ValueError(f"unknown category {value!r}")
    return str(value)


@review.agent(validate=category)
async def classify(ctx: fb.Context, doc: dict[str, Any]) -> str:
    raise fb.NeedsHuman("which category?", suggestions=["invoice", "receipt"])


@review.agent(after=[classify])
async def file_doc(ctx: fb.Context, classify: str) -> str:
    return f"filed as {classify}"


# -- pauses while a service is down (its breaker says: try again now) ------------------------

paused = fb.Workflow("cli-paused")


@paused.agent(on_exhausted="pause")
async def lookup(ctx: fb.Context, query: str) -> dict[str, str]:
    if os.environ.get(LOOKUP_DOWN) == "1":
        raise fb.CircuitOpenError("lookup-api", retry_after=0.0)
    return {"found": query}


# -- slow: a long second step, for stopping the process in the middle -------------------------

slow = fb.Workflow("cli-slow")


@slow.agent
async def first(ctx: fb.Context, data: dict[str, Any]) -> int:
    return int(data["n"])


@slow.agent(after=[first], timeout=60)
async def second(ctx: fb.Context, first: int) -> int:
    if os.environ.get(SLOW_SECOND) == "1":
        await asyncio.sleep(30)  # the test stops the process long before
    return first + 1


not_a_workflow = 42
