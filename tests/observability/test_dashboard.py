"""deploy/grafana/firebreak.json: valid JSON whose queries use only metrics we export."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from shipped import DASHBOARD, exported_series_names, names_in

from firebreak.observability import METRIC_NAMES


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))


def expressions() -> list[str]:
    board = dashboard()
    found = [
        target["expr"] for panel in panels(board["panels"]) for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def test_every_query_uses_only_exported_metric_names() -> None:
    exported = exported_series_names()
    exprs = expressions()
    assert len(exprs) >= 10
    for expr in exprs:
        used = names_in(expr)
        assert used, f"no firebreak metric in {expr!r}"
        assert used <= exported, f"{expr!r} uses {sorted(used - exported)}"


def test_every_exported_metric_has_a_panel() -> None:
    used = {name for expr in expressions() for name in names_in(expr)}
    for metric in METRIC_NAMES:
        assert any(name == metric or name.startswith(f"{metric}_") for name in used), metric


def test_panels_are_well_formed() -> None:
    board = dashboard()
    assert board["uid"] == "firebreak-overview"
    every = list(panels(board["panels"]))
    ids = [panel["id"] for panel in every]
    assert len(ids) == len(set(ids))
    for panel in every:
        assert panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"])
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert [t["refId"] for t in panel["targets"]]
