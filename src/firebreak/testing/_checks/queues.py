"""Contract checks: the dead-letter queue and the manual-review queue."""

# ruff: noqa: S101 -- the checks are assertions; `run_conformance` refuses to run under -O

from __future__ import annotations

from firebreak.errors import StoreError
from firebreak.store.base import ReviewStatus
from firebreak.testing._harness import ConformanceEnv, leased, raises, step


async def check_dead_letters_round_trip_with_steps(env: ConformanceEnv) -> None:
    """A dead letter reads back whole, with the run's steps; an unknown id reads ``None``."""
    store, wall = env.store, env.wall
    lease = await leased(store)
    await store.commit_step(lease, step("r1", "a", {"ok": 1}))
    steps = await store.get_steps("r1")
    error = {"type": "Permanent", "message": "boom", "attrs": {}}
    dlq_id = await store.dlq_put(
        run_id="r1", workflow="wf", reason="a failed", error=error, input={"n": 1}, steps=steps
    )
    entry = await store.dlq_get(dlq_id)
    assert entry is not None
    assert (entry.run_id, entry.workflow, entry.reason, entry.error) == (
        "r1",
        "wf",
        "a failed",
        error,
    )
    assert (entry.input, entry.steps, entry.created_at) == ({"n": 1}, steps, wall.wall())
    assert await store.dlq_list() == [entry]
    assert await store.dlq_get("missing") is None
    assert await store.dlq_of_run("r1") == entry
    assert await store.dlq_of_run("missing") is None


async def check_dead_letter_queue_filters_counts_and_drops(env: ConformanceEnv) -> None:
    """The DLQ lists oldest first, filters and counts by workflow, and drops once."""
    store = env.store
    ids = [
        await store.dlq_put(run_id=f"r{i}", workflow="a" if i < 2 else "b", reason="x")
        for i in range(3)
    ]
    assert len(set(ids)) == 3
    assert [d.run_id for d in await store.dlq_list()] == ["r0", "r1", "r2"]
    assert [d.run_id for d in await store.dlq_list("b")] == ["r2"]
    assert (await store.dlq_size(), await store.dlq_size("a"), await store.dlq_size("z")) == (
        3,
        2,
        0,
    )
    assert await store.dlq_drop(ids[0])
    assert not await store.dlq_drop(ids[0])
    assert await store.dlq_of_run("r0") is None
    assert await store.dlq_size() == 2
    entry = await store.dlq_get(ids[1])
    assert entry is not None
    assert entry.steps is None


async def check_dead_letter_of_a_run_failing_again_is_replaced(env: ConformanceEnv) -> None:
    """A run failing again replaces its entry (same id), which moves to the back."""
    store = env.store
    first = await store.dlq_put(run_id="r1", workflow="wf", reason="first")
    await store.dlq_put(run_id="r2", workflow="wf", reason="other")
    second = await store.dlq_put(run_id="r1", workflow="wf", reason="again")
    assert first == second
    entry = await store.dlq_of_run("r1")
    assert entry is not None
    assert (entry.id, entry.reason) == (first, "again")
    assert [(d.run_id, d.reason) for d in await store.dlq_list()] == [
        ("r2", "other"),
        ("r1", "again"),
    ]


async def check_review_queue_put_resolve_and_count(env: ConformanceEnv) -> None:
    """A review item reads back open, resolves with a value and time, and leaves the count."""
    store, wall = env.store, env.wall
    item_id = await store.review_put(
        run_id="r1",
        workflow="wf",
        agent="match",
        reason="two candidates",
        suggestions=[{"po": 1}, {"po": 2}],
        context={"invoice": 42},
    )
    item = await store.review_get(item_id)
    assert item is not None
    assert (item.status, item.value, item.resolved_at) == (ReviewStatus.OPEN, None, None)
    assert (item.suggestions, item.context, item.created_at) == (
        [{"po": 1}, {"po": 2}],
        {"invoice": 42},
        wall.wall(),
    )
    assert await store.review_size() == 1
    assert await store.review_list() == [item]
    wall.advance(5)
    resolved = await store.review_resolve(item_id, {"po": 2})
    assert (resolved.status, resolved.value, resolved.resolved_at) == (
        ReviewStatus.RESOLVED,
        {"po": 2},
        wall.wall(),
    )
    assert await store.review_get(item_id) == resolved
    assert await store.review_size() == 0
    assert await store.review_list() == []
    assert await store.review_list("resolved") == [resolved]
    assert await store.review_list(None) == [resolved]


async def check_review_put_for_an_open_step_is_reused(env: ConformanceEnv) -> None:
    """A resumed run asking again for the same step must not queue a duplicate."""
    store = env.store
    kw = {"run_id": "r1", "workflow": "wf", "agent": "a", "reason": "?"}
    first = await store.review_put(**kw)
    assert await store.review_put(**kw) == first
    await store.review_resolve(first, None)
    assert await store.review_put(**kw) != first
    assert len(await store.review_list(None)) == 2


async def check_review_resolve_refuses_unknown_and_resolved(env: ConformanceEnv) -> None:
    """Resolving an unknown item is `KeyError`, a resolved one `StoreError`; bad status too."""
    store = env.store
    item_id = await store.review_put(run_id="r1", workflow="wf", agent="a", reason="?")
    with raises(KeyError):
        await store.review_resolve("missing", 1)
    await store.review_resolve(item_id, 1)
    with raises(StoreError, match="already resolved"):
        await store.review_resolve(item_id, 2)
    resolved = await store.review_get(item_id)
    assert resolved is not None
    assert resolved.value == 1
    with raises(ValueError):
        await store.review_list("bogus")


async def check_review_items_of_a_run(env: ConformanceEnv) -> None:
    """A run's items, open and resolved, oldest first; no other run's; none for a stranger."""
    store = env.store
    first = await store.review_put(run_id="r1", workflow="wf", agent="a", reason="?")
    await store.review_put(run_id="r2", workflow="wf", agent="a", reason="?")
    second = await store.review_put(run_id="r1", workflow="wf", agent="b", reason="?")
    await store.review_resolve(first, {"po": 2})
    items = await store.review_of_run("r1")
    assert [(i.id, i.status, i.value) for i in items] == [
        (first, ReviewStatus.RESOLVED, {"po": 2}),
        (second, ReviewStatus.OPEN, None),
    ]
    assert items == [await store.review_get(first), await store.review_get(second)]
    assert await store.review_of_run("missing") == []


CHECKS = (
    check_dead_letters_round_trip_with_steps,
    check_dead_letter_queue_filters_counts_and_drops,
    check_dead_letter_of_a_run_failing_again_is_replaced,
    check_review_queue_put_resolve_and_count,
    check_review_put_for_an_open_step_is_reused,
    check_review_resolve_refuses_unknown_and_resolved,
    check_review_items_of_a_run,
)
