"""A module whose workflow definition is invalid: importing it raises `DefinitionError`."""

from __future__ import annotations

import firebreak as fb

broken = fb.Workflow("cli-broken")


async def orphan(ctx: fb.Context, missing: int) -> int:
    return missing


broken.add(orphan, after=["missing"])
