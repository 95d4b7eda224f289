"""Graph algorithms over specs given by name, for graphs that may hold forward references."""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from firebreak.workflow.spec import AgentSpec

__all__ = ["find_cycle", "topological"]


def find_cycle(by_name: Mapping[str, AgentSpec]) -> list[str] | None:
    """A cycle in data-flow order (first node repeated at the end), or ``None``."""
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    for spec in by_name.values():
        for dep in spec.after:
            consumers[dep].append(spec.name)
    done: set[str] = set()
    for start in by_name:
        if start in done:
            continue
        path, on_path = [start], {start}
        stack = [iter(consumers[start])]
        while stack:
            nxt = next(stack[-1], None)
            if nxt is None:
                stack.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if nxt in on_path:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in done:
                path.append(nxt)
                on_path.add(nxt)
                stack.append(iter(consumers[nxt]))
    return None


def topological(by_name: Mapping[str, AgentSpec]) -> list[AgentSpec]:
    """Kahn's algorithm; among ready agents the one given first goes first."""
    index = {name: i for i, name in enumerate(by_name)}
    waiting = {name: len(spec.after) for name, spec in by_name.items()}
    consumers: dict[str, list[str]] = {name: [] for name in by_name}
    for spec in by_name.values():
        for dep in spec.after:
            consumers[dep].append(spec.name)
    ready = [index[name] for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    names = list(by_name)
    out: list[AgentSpec] = []
    while ready:
        name = names[heapq.heappop(ready)]
        out.append(by_name[name])
        for consumer in consumers[name]:
            waiting[consumer] -= 1
            if waiting[consumer] == 0:
                heapq.heappush(ready, index[consumer])
    return out
