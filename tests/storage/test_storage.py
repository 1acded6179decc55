"""The Store contract, checked directly on both backends (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirbox.storage import open_store
from fhirbox.storage.base import (
    DELETE,
    UNCHANGED,
    Comparison,
    Filter,
    MutationResult,
    NewResource,
    SearchQuery,
    SortKey,
    Store,
    Stored,
    StoreUnavailable,
    UnstorableValue,
)
from tests.support import eventually


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[Store]:
    opened = open_store(database_url)
    await opened.open()
    try:
        yield opened
    finally:
        await opened.close()


def put(body: dict[str, Any]) -> Callable[[Stored | None], dict[str, Any]]:
    return lambda current: dict(body)


async def put_many(store: Store, type_: str, bodies: dict[str, dict[str, Any]]) -> None:
    for id_, body in bodies.items():
        await store.mutate(type_, id_, put(body))


def ids(resources: list[dict[str, Any]]) -> list[str]:
    return [resource["id"] for resource in resources]


class Boom(Exception):
    pass


# -- versions and history --------------------------------------------------------------------------
async def test_create_update_delete_each_make_a_version_and_history_is_newest_first(store: Store) -> None:
    created = await store.mutate("Patient", "p1", put({"name": "a"}))
    updated = await store.mutate("Patient", "p1", put({"name": "b"}))
    deleted = await store.mutate("Patient", "p1", lambda current: DELETE)
    assert created.created and not updated.created and not deleted.created
    assert [r.after.op for r in (created, updated, deleted) if r.after] == ["create", "update", "delete"]
    versions = [r.after.version for r in (created, updated, deleted) if r.after]
    assert versions == sorted(versions) and len(set(versions)) == 3

    history, total = await store.history("Patient", "p1", limit=10, offset=0)
    assert total == 3
    assert [(h.version, h.op) for h in history] == [
        (versions[2], "delete"),
        (versions[1], "update"),
        (versions[0], "create"),
    ]
    page, total = await store.history("Patient", "p1", limit=1, offset=1)
    assert total == 3 and [h.version for h in page] == [versions[1]]


async def test_meta_is_stamped_and_created_at_survives_updates(store: Store) -> None:
    first = (await store.mutate("Patient", "p1", put({"meta": {"tag": "x"}}))).after
    second = (await store.mutate("Patient", "p1", put({}))).after
    assert first is not None and second is not None
    assert first.body["resourceType"] == "Patient" and first.body["id"] == "p1"
    assert first.body["meta"]["versionId"] == str(first.version)
    assert first.body["meta"]["tag"] == "x"
    assert second.body["meta"]["createdAt"] == first.body["meta"]["createdAt"]
    assert second.body["meta"]["lastUpdated"] >= first.body["meta"]["lastUpdated"]
    stored = await store.read("Patient", "p1")
    assert stored is not None and stored.body == second.body


async def test_versions_increase_across_all_resources(store: Store) -> None:
    seen = []
    for id_ in ("a", "b", "c", "a"):
        result = await store.mutate("Patient" if id_ != "b" else "Practitioner", id_, put({}))
        assert result.after is not None
        seen.append(result.after.version)
    assert seen == sorted(seen) and len(set(seen)) == 4


async def test_deleted_resource_reads_as_deleted_and_recreating_starts_afresh(store: Store) -> None:
    created = (await store.mutate("Patient", "p1", put({"name": "a"}))).after
    await store.mutate("Patient", "p1", lambda current: DELETE)
    gone = await store.read("Patient", "p1")
    assert gone is not None and gone.deleted and gone.body["name"] == "a"
    assert await store.read("Patient", "never") is None

    again = await store.mutate("Patient", "p1", put({"name": "c"}))
    assert again.created and again.after is not None and created is not None
    assert again.after.op == "create"
    assert again.after.body["meta"]["createdAt"] >= created.body["meta"]["createdAt"]


async def test_read_version_returns_each_past_version(store: Store) -> None:
    first = (await store.mutate("Patient", "p1", put({"n": 1}))).after
    second = (await store.mutate("Patient", "p1", put({"n": 2}))).after
    assert first is not None and second is not None
    old = await store.read_version("Patient", "p1", first.version)
    assert old is not None and old.body["n"] == 1 and old.op == "create"
    new = await store.read_version("Patient", "p1", second.version)
    assert new is not None and new.body["n"] == 2
    assert await store.read_version("Patient", "p1", second.version + 1000) is None
    assert await store.read_version("Patient", "other", first.version) is None


async def test_unchanged_and_deleting_a_missing_resource_write_nothing(store: Store) -> None:
    missing = await store.mutate("Patient", "p1", lambda current: DELETE)
    assert missing.before is None and missing.after is None
    await store.mutate("Patient", "p1", put({"n": 1}))
    kept = await store.mutate("Patient", "p1", lambda current: UNCHANGED)
    assert kept.after is kept.before
    await store.mutate("Patient", "p1", lambda current: DELETE)
    twice = await store.mutate("Patient", "p1", lambda current: DELETE)
    assert twice.after is twice.before
    assert (await store.history("Patient", "p1", limit=10, offset=0))[1] == 2


async def test_a_failing_mutation_propagates_its_exception_and_writes_nothing(store: Store) -> None:
    error = Boom("no")

    def fail(current: Stored | None) -> dict[str, Any]:
        raise error

    with pytest.raises(Boom) as raised:
        await store.mutate("Patient", "new", fail)
    assert raised.value is error
    assert await store.read("Patient", "new") is None
    assert (await store.history("Patient", "new", limit=10, offset=0))[1] == 0

    before = (await store.mutate("Patient", "old", put({"n": 1}))).after
    with pytest.raises(Boom):
        await store.mutate("Patient", "old", fail)
    after = await store.read("Patient", "old")
    assert before is not None and after is not None
    assert after.version == before.version and after.body == before.body


async def test_a_failing_mutation_does_not_disturb_concurrent_ones(store: Store) -> None:
    def fail(current: Stored | None) -> dict[str, Any]:
        raise Boom

    outcomes = await asyncio.gather(
        *(store.mutate("Patient", f"p{i}", fail if i % 2 else put({"i": i})) for i in range(20)),
        return_exceptions=True,
    )
    assert sum(isinstance(outcome, Boom) for outcome in outcomes) == 10
    found = await store.search("Patient", SearchQuery(limit=100))
    assert sorted(ids(found.resources)) == sorted(f"p{i}" for i in range(0, 20, 2))


# -- concurrency ----------------------------------------------------------------------------------
async def test_concurrent_appends_to_one_resource_lose_nothing(store: Store) -> None:
    def append(item: int) -> Callable[[Stored | None], dict[str, Any]]:
        def mutation(current: Stored | None) -> dict[str, Any]:
            items = list(current.body["items"]) if current else []
            return {"items": [*items, item]}

        return mutation

    await asyncio.gather(*(store.mutate("List", "l1", append(i)) for i in range(50)))
    stored = await store.read("List", "l1")
    assert stored is not None
    assert sorted(stored.body["items"]) == list(range(50))
    assert (await store.history("List", "l1", limit=1, offset=0))[1] == 50


class Exists(Exception):
    """A creation found the resource already there."""


def create_only(body: dict[str, Any]) -> Callable[[Stored | None], dict[str, Any]]:
    """A mutation creating ``body``, or raising ``Exists``."""

    def mutation(current: Stored | None) -> dict[str, Any]:
        if current is not None:
            raise Exists
        return dict(body)

    return mutation


async def test_concurrent_creates_of_one_new_id_are_serialised(store: Store) -> None:
    outcomes = await asyncio.gather(
        *(store.mutate("Patient", "only", create_only({"winner": n})) for n in range(20)),
        return_exceptions=True,
    )
    winners = [outcome for outcome in outcomes if not isinstance(outcome, BaseException)]
    assert len(winners) == 1
    assert all(isinstance(outcome, Exists) for outcome in outcomes if outcome not in winners)
    assert (await store.history("Patient", "only", limit=10, offset=0))[1] == 1


async def test_two_store_instances_never_lose_each_others_updates(database_url: str, store: Store) -> None:
    other = open_store(database_url)
    await other.open()
    try:

        def increment(current: Stored | None) -> dict[str, Any]:
            return {"count": (current.body["count"] if current else 0) + 1}

        await asyncio.gather(
            *(s.mutate("Counter", "c", increment) for _ in range(20) for s in (store, other))
        )
        stored = await other.read("Counter", "c")
        assert stored is not None and stored.body["count"] == 40
    finally:
        await other.close()


async def test_stores_sharing_a_database_write_one_resource_each_version_over_the_one_before(
    database_url: str, store: Store
) -> None:
    """Three stores (three server processes) create one resource at once, then update it at once: one
    creation wins, every update lands, and each version is written over the version before it (its
    counter one more), whichever way the writes raced (PostgreSQL: without locks first, then under
    them for the writes that lost a race)."""

    def increment(current: Stored | None) -> dict[str, Any]:
        assert current is not None
        return {**current.body, "count": current.body["count"] + 1}

    others = [open_store(database_url), open_store(database_url)]
    for other in others:
        await other.open()
    stores = [store, *others]
    try:
        created = await asyncio.gather(
            *(
                s.mutate("Counter", "shared", create_only({"count": 1, "creator": n}))
                for n in range(10)
                for s in stores
            ),
            return_exceptions=True,
        )
        assert sum(not isinstance(outcome, BaseException) for outcome in created) == 1
        assert all(isinstance(outcome, Exists | MutationResult) for outcome in created)
        await asyncio.gather(*(s.mutate("Counter", "shared", increment) for _ in range(30) for s in stores))
        versions, total = await store.history("Counter", "shared", limit=200, offset=0)
        assert total == 91
        oldest_first = sorted(versions, key=lambda stored: stored.version)
        assert [stored.body["count"] for stored in oldest_first] == list(range(1, 92))
    finally:
        for other in others:
            await other.close()


async def test_a_write_waits_for_the_process_holding_its_resources_lock_and_is_applied_after_it(
    database_url: str, store: Store, backend: str
) -> None:
    """PostgreSQL: another process holding a resource's lock (it read the resource, found none, and is
    deciding what to write) is never overtaken: a write of the same resource waits for it, and is
    then applied over what it wrote instead of being overwritten by it."""
    if backend != "postgres":
        pytest.skip("SQLite has one writer per database file; there is no key lock to share")
    import asyncpg

    def increment(current: Stored | None) -> dict[str, Any]:
        return {"count": (current.body["count"] if current else 0) + 1}

    admin = await asyncpg.connect(database_url)
    try:
        holding = admin.transaction()
        await holding.start()
        await admin.execute("SELECT pg_advisory_xact_lock(hashtext('Counter'), hashtext('held'))")
        assert await admin.fetchval("SELECT count(*) FROM resource WHERE id = 'held'") == 0
        writing = asyncio.ensure_future(store.mutate("Counter", "held", increment))
        waits = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        await eventually(lambda: admin.fetchval(waits))
        assert not writing.done()
        body = '{"resourceType": "Counter", "id": "held", "count": 10}'
        await admin.execute(
            "INSERT INTO resource (type, id, version, op, updated, body)"
            " VALUES ('Counter', 'held', nextval('resource_version_seq'), 'create', $1, $2::jsonb)",
            "2026-12-01T00:00:00.000000Z",
            body,
        )
        await holding.commit()
        result = await asyncio.wait_for(writing, 10)
        assert result.after is not None and result.after.body["count"] == 11
        stored = await store.read("Counter", "held")
        assert stored is not None and stored.body["count"] == 11
    finally:
        await admin.close()


def on_another_connection(database_url: str, sql: str, *args: Any) -> None:
    """Run ``sql`` on a connection of its own, from inside a (synchronous) mutation: another process
    acting between a batch's read and its write."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(sql, *args)
        finally:
            await conn.close()

    thread = threading.Thread(target=lambda: asyncio.run(run()))
    thread.start()
    thread.join()


# Another process's update of a resource: a new version, written straight into the table.
RACING_UPDATE = (
    "UPDATE resource SET version = nextval('resource_version_seq'),"
    " body = jsonb_set(body, '{racer}', 'true') WHERE type = $1 AND id = $2"
)


def increment(current: Stored | None) -> dict[str, Any]:
    return {"count": (current.body["count"] if current else 0) + 1}


async def test_writes_of_a_batch_that_committed_are_not_written_again_when_a_retry_fails(
    database_url: str, store: Store, backend: str
) -> None:
    """PostgreSQL: a batch's writes commit together, except one that lost a race with another process;
    when the connection then drops while that one is retried under locks, the writes already committed
    and answered are not written a second time."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL batch's race with another process")
    await store.mutate("Counter", "y", increment)
    await store.mutate("Counter", "x", increment)
    calls = {"y": 0, "x": 0}

    def on_y(current: Stored | None) -> dict[str, Any]:
        calls["y"] += 1
        return increment(current)

    def on_x(current: Stored | None) -> dict[str, Any]:
        calls["x"] += 1
        if calls["x"] == 1:  # another process updates x between this batch's read and its write
            on_another_connection(database_url, RACING_UPDATE, "Counter", "x")
        elif calls["x"] == 2:  # retried under locks: this writer's connection is lost
            on_another_connection(
                database_url,
                "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory' AND granted",
            )
        return increment(current)

    answers = await asyncio.gather(
        store.mutate("Counter", "y", on_y), store.mutate("Counter", "x", on_x), return_exceptions=True
    )
    assert calls["x"] >= 2, "x did not lose its race"
    written = answers[0]
    assert isinstance(written, MutationResult) and written.after is not None
    stored = await store.read("Counter", "y")
    assert stored is not None and stored.body["count"] == written.after.body["count"] == 2
    assert calls["y"] == 1
    assert (await store.history("Counter", "y", limit=10, offset=0))[1] == 2


async def test_a_write_that_depended_on_an_earlier_one_of_its_batch_shares_its_fate(
    database_url: str, store: Store, backend: str
) -> None:
    """PostgreSQL: two deletions of one resource in one batch, the first conditional (If-Match). When
    the first loses a race with another process and, retried, is refused, the second (which found the
    resource already deleted by the first) is decided again too: it deletes the resource, and what it
    answers is what is stored."""
    if backend != "postgres":
        pytest.skip("a PostgreSQL batch's race with another process")

    class PreconditionFailed(Exception):
        pass

    first = await store.mutate("Patient", "x", lambda current: {"name": "x"})
    assert first.after is not None
    seen = first.after.version
    calls = {"conditional": 0}

    def conditional_delete(current: Stored | None) -> Any:
        calls["conditional"] += 1
        if calls["conditional"] == 1:
            on_another_connection(database_url, RACING_UPDATE, "Patient", "x")
        if current is None or current.deleted:
            return UNCHANGED
        if current.version != seen:
            raise PreconditionFailed
        return DELETE

    def plain_delete(current: Stored | None) -> Any:
        return UNCHANGED if current is None or current.deleted else DELETE

    refused, deleted = await asyncio.gather(
        store.mutate("Patient", "x", conditional_delete),
        store.mutate("Patient", "x", plain_delete),
        return_exceptions=True,
    )
    assert isinstance(refused, PreconditionFailed)
    assert isinstance(deleted, MutationResult) and deleted.after is not None and deleted.after.deleted
    stored = await store.read("Patient", "x")
    assert stored is not None and stored.deleted and stored.version == deleted.after.version


# -- search -----------------------------------------------------------------------------------------
PEOPLE: dict[str, dict[str, Any]] = {
    "ann": {"name": {"given": "Ann", "family": "Lee"}, "age": 30, "active": True, "tags": ["a", "b"]},
    "bob": {"name": {"given": "Bob", "family": "Lee"}, "age": 41, "active": False, "tags": ["b"]},
    "cat": {"name": {"given": "Cat", "family": "Roe"}, "age": 30.0, "active": True, "code": "30"},
    "dan": {"name": {"given": "Dan"}, "tags": [1, 2]},
}


async def test_search_filters_nested_paths_arrays_numbers_and_booleans(store: Store) -> None:
    await put_many(store, "Person", PEOPLE)

    async def matching(*filters: Filter) -> list[str]:
        return sorted(ids((await store.search("Person", SearchQuery(filters=filters))).resources))

    assert await matching(Filter(("name", "family"), "Lee")) == ["ann", "bob"]
    assert await matching(Filter(("name", "family"), "lee")) == []
    assert await matching(Filter(("tags",), "b")) == ["ann", "bob"]
    assert await matching(Filter(("tags",), "2")) == ["dan"]
    assert await matching(Filter(("age",), "30")) == ["ann", "cat"]
    assert await matching(Filter(("code",), "30")) == ["cat"]
    assert await matching(Filter(("active",), "true")) == ["ann", "cat"]
    assert await matching(Filter(("active",), "false")) == ["bob"]
    assert await matching(Filter(("name", "family"), "Lee"), Filter(("age",), "41")) == ["bob"]
    assert await matching(Filter(("missing", "path"), "x")) == []
    assert await matching(Filter(("name", "given"), 'Ann" || @ == "Bob')) == []
    assert await matching(Filter(("name", "given"), "Ann\x00")) == []


async def test_search_skips_deleted_resources_and_other_types(store: Store) -> None:
    await put_many(store, "Person", PEOPLE)
    await store.mutate("Person", "bob", lambda current: DELETE)
    await store.mutate("Animal", "rex", put({"name": {"family": "Lee"}}))
    found = await store.search("Person", SearchQuery(filters=[Filter(("name", "family"), "Lee")]))
    assert ids(found.resources) == ["ann"] and found.total == 1


async def test_search_by_ids_and_comparisons(store: Store) -> None:
    await put_many(store, "Person", {"ann": {}, "bob": {}})
    middle = await store.read("Person", "bob")
    assert middle is not None
    cut = middle.body["meta"]["lastUpdated"]
    await put_many(store, "Person", {"cat": {}})

    async def matching(query: SearchQuery) -> list[str]:
        return sorted(ids((await store.search("Person", query)).resources))

    assert await matching(SearchQuery(ids=["ann", "cat", "zed"])) == ["ann", "cat"]
    assert await matching(SearchQuery(comparisons=[Comparison("lastUpdated", "ge", cut)])) == ["bob", "cat"]
    assert await matching(SearchQuery(comparisons=[Comparison("lastUpdated", "gt", cut)])) == ["cat"]
    assert await matching(SearchQuery(comparisons=[Comparison("lastUpdated", "lt", cut)])) == ["ann"]
    assert await matching(SearchQuery(comparisons=[Comparison("lastUpdated", "le", cut)])) == ["ann", "bob"]
    assert await matching(SearchQuery(comparisons=[Comparison("lastUpdated", "eq", cut)])) == ["bob"]
    assert await matching(SearchQuery(comparisons=[Comparison("lastUpdated", "ne", cut)])) == ["ann", "cat"]
    assert await matching(SearchQuery(comparisons=[Comparison("id", "gt", "ann")])) == ["bob", "cat"]
    assert await matching(SearchQuery(ids=["ann\x00"])) == []


async def test_search_sorts_by_id_last_updated_and_json_paths(store: Store) -> None:
    await put_many(store, "Person", PEOPLE)

    async def order(*keys: SortKey) -> list[str]:
        return ids((await store.search("Person", SearchQuery(sort=keys))).resources)

    assert await order() == ["ann", "bob", "cat", "dan"]  # oldest first by default
    assert await order(SortKey(("_id",), descending=True)) == ["dan", "cat", "bob", "ann"]
    assert await order(SortKey(("_lastUpdated",), descending=True)) == ["dan", "cat", "bob", "ann"]
    assert await order(SortKey(("name", "given"), descending=True)) == ["dan", "cat", "bob", "ann"]
    # Missing values first; ties keep the default order.
    assert await order(SortKey(("age",))) == ["dan", "ann", "cat", "bob"]
    assert await order(SortKey(("age",), descending=True)) == ["bob", "ann", "cat", "dan"]
    assert await order(SortKey(("name", "family")), SortKey(("_id",), descending=True)) == [
        "dan",
        "bob",
        "ann",
        "cat",
    ]


async def test_search_pages_with_limit_and_offset_and_counts_every_match(store: Store) -> None:
    await put_many(store, "Item", {f"i{n:02d}": {"n": n} for n in range(25)})
    seen: list[str] = []
    for offset in range(0, 30, 10):
        page = await store.search("Item", SearchQuery(sort=[SortKey(("n",))], limit=10, offset=offset))
        assert page.total == 25
        seen.extend(ids(page.resources))
    assert seen == [f"i{n:02d}" for n in range(25)]
    beyond = await store.search("Item", SearchQuery(limit=10, offset=100))
    assert beyond.resources == [] and beyond.total == 25


# -- purge ------------------------------------------------------------------------------------------
async def test_purge_removes_resources_below_a_number_with_their_history(store: Store) -> None:
    await put_many(
        store,
        "Session",
        {"old": {"exp": 100}, "edge": {"exp": 200}, "new": {"exp": 300}, "odd": {"exp": "50"}, "none": {}},
    )
    await store.mutate("Session", "old", put({"exp": 150}))
    await store.mutate("Other", "old", put({"exp": 1}))
    assert await store.purge("Session", ("exp",), 200) == 1
    assert await store.read("Session", "old") is None
    assert (await store.history("Session", "old", limit=10, offset=0))[1] == 0
    remaining = await store.search("Session", SearchQuery())
    assert sorted(ids(remaining.resources)) == ["edge", "new", "none", "odd"]
    assert await store.read("Other", "old") is not None


# -- change feed, lifecycle ------------------------------------------------------------------------
async def test_a_second_store_hears_the_first_ones_writes(database_url: str, store: Store) -> None:
    other = open_store(database_url)
    await other.open()
    heard: list[tuple[str, str]] = []
    other.subscribe(lambda type_, id_: heard.append((type_, id_)))
    other.start_change_feed(0.05)
    try:
        # The feed may need a moment to start listening: write until it hears something.
        async def heard_warmup() -> bool:
            if ("Client", "warmup") in heard:
                return True
            await store.mutate("Client", "warmup", put({}))
            return False

        await eventually(heard_warmup, interval=0.1)
        heard.clear()
        await store.mutate("Client", "c1", put({}))
        await eventually(lambda: ("Client", "c1") in heard)
        heard.clear()
        await store.mutate("Client", "c1", lambda current: DELETE)
        await eventually(lambda: ("Client", "c1") in heard)
    finally:
        await other.close()


async def test_local_writes_are_reported_at_once(store: Store) -> None:
    heard: list[tuple[str, str]] = []
    store.subscribe(lambda type_, id_: heard.append((type_, id_)))
    await store.mutate("Client", "c1", put({}))
    assert heard == [("Client", "c1")]
    await store.mutate("Client", "c1", lambda current: UNCHANGED)
    assert heard == [("Client", "c1")]


async def test_the_change_feed_reports_other_processes_writes_and_not_its_own_again(
    database_url: str, store: Store
) -> None:
    """A store's own write is reported once (by ``mutate``), not a second time when its change feed
    passes it: a second report would drop, say, the Session a token endpoint just cached."""
    other = open_store(database_url)
    await other.open()
    heard: list[tuple[str, str]] = []
    store.subscribe(lambda type_, id_: heard.append((type_, id_)))
    store.start_change_feed(0.02)
    try:
        await store.mutate("Client", "mine", put({}))
        await store.mutate("Client", "mine", put({"v": 2}))
        await other.mutate("Client", "theirs", put({}))
        await eventually(lambda: ("Client", "theirs") in heard)
        await store.mutate("Client", "mine2", put({}))
        await other.mutate("Client", "theirs2", put({}))
        await eventually(lambda: ("Client", "theirs2") in heard)
        assert heard == [
            ("Client", "mine"),
            ("Client", "mine"),
            ("Client", "theirs"),
            ("Client", "mine2"),
            ("Client", "theirs2"),
        ]
    finally:
        await other.close()


async def test_opening_twice_at_once_and_reopening_keeps_data(database_url: str) -> None:
    first, second = open_store(database_url), open_store(database_url)
    await asyncio.gather(first.open(), second.open())
    written = (await first.mutate("Patient", "p1", put({"n": 1}))).after
    await asyncio.gather(first.close(), second.close())
    assert written is not None

    again = open_store(database_url)
    await again.open()
    try:
        kept = await again.read("Patient", "p1")
        assert kept is not None and kept.body == written.body
        later = (await again.mutate("Patient", "p2", put({}))).after
        assert later is not None and later.version > written.version
        assert await again.ping()
    finally:
        await again.close()
    assert not await again.ping()


async def test_postgres_refuses_a_nul_character_and_writes_nothing(store: Store, backend: str) -> None:
    if backend != "postgres":
        pytest.skip("only PostgreSQL text cannot hold U+0000")
    with pytest.raises(UnstorableValue):
        await store.mutate("Patient", "p1", put({"name": "a\x00b"}))
    assert await store.read("Patient", "p1") is None
    assert (await store.mutate("Patient", "p1", put({"name": "ab"}))).created


async def test_the_change_feed_reconnects_after_losing_its_connection(
    database_url: str, store: Store, backend: str
) -> None:
    if backend != "postgres":
        pytest.skip("SQLite's change feed reads the file and has no connection to lose")
    import asyncpg

    other = open_store(database_url)
    await other.open()
    heard: list[tuple[str, str]] = []
    other.subscribe(lambda type_, id_: heard.append((type_, id_)))
    other.start_change_feed(0.05)
    admin = await asyncpg.connect(database_url)
    try:
        schema = await admin.fetchval("SELECT current_schema()")

        async def drop_feed() -> bool:
            dropped = await admin.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
                f"feed:fhirbox:{schema}",
            )
            return bool(dropped)

        await eventually(drop_feed)  # fails if the change feed never connects
        await store.mutate("Client", "during-gap", put({}))
        await eventually(lambda: ("Client", "during-gap") in heard)
        heard.clear()
        await store.mutate("Client", "after", put({}))
        await eventually(lambda: ("Client", "after") in heard)
    finally:
        await admin.close()
        await other.close()


async def test_stopping_the_change_feed_at_any_moment_leaves_no_error_behind(store: Store) -> None:
    """Stopped mid-connect, asyncpg used to leave a future whose error asyncio reported later,
    in whatever ran next ("Future exception was never retrieved")."""
    import gc

    reported: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    try:
        for attempt in range(120):
            store.start_change_feed(0.05)
            for _ in range(attempt % 8):  # stop it a few loop turns further into its start each time
                await asyncio.sleep(0)
            await store.stop_change_feed()
        gc.collect()
        await asyncio.sleep(0)
    finally:
        loop.set_exception_handler(previous)
    assert [context.get("message") for context in reported] == []


async def test_search_looks_into_arrays_on_the_way_but_not_into_objects(store: Store) -> None:
    await put_many(
        store,
        "Patient",
        {
            "ann": {"name": [{"given": ["Ann", "Jo"], "family": "Lee"}, {"family": "Roe"}]},
            "bob": {"name": {"given": "Bob"}, "contact": [[{"name": "Lee"}]]},
            "cat": {"family": {"name": "Lee"}},
        },
    )

    async def matching(*filters: Filter) -> list[str]:
        return sorted(ids((await store.search("Patient", SearchQuery(filters=filters))).resources))

    assert await matching(Filter(("name", "family"), "Roe")) == ["ann"]
    assert await matching(Filter(("name", "given"), "Jo")) == ["ann"]
    assert await matching(Filter(("name", "given"), "Bob")) == ["bob"]
    assert await matching(Filter(("family",), "Lee")) == []
    assert await matching(Filter(("name",), "Bob")) == []


async def test_search_accepts_any_number_text_without_failing(store: Store) -> None:
    await put_many(store, "Item", {"five": {"n": 5}, "big": {"n": 1e30}, "text": {"n": "1_000"}})

    async def matching(value: str) -> list[str]:
        query = SearchQuery(filters=[Filter(("n",), value)])
        return sorted(ids((await store.search("Item", query)).resources))

    assert await matching("5.0") == ["five"]
    assert await matching("5e0") == ["five"]
    assert "five" not in await matching("9" * 30)  # past 64 bits: no error (SQLite compares as real)
    assert await matching("1" + "0" * 30) == ["big"]
    assert await matching("1_000") == ["text"]
    for odd in ("nan", "inf", "1e999", "-", "05", " 5"):
        assert await matching(odd) == [], odd


# -- keys used once ------------------------------------------------------------------------------------
async def test_remember_once_is_true_only_the_first_time_until_expiry(store: Store) -> None:
    assert await store.remember_once("ns", "k", 100.0, now=10.0) is True
    assert await store.remember_once("ns", "k", 200.0, now=50.0) is False
    assert await store.remember_once("other", "k", 100.0, now=50.0) is True
    # Once its record expired, the key may be used again, and is held again.
    assert await store.remember_once("ns", "k", 300.0, now=100.0) is True
    assert await store.remember_once("ns", "k", 300.0, now=150.0) is False


async def test_concurrent_remember_once_of_one_key_succeeds_once(store: Store, database_url: str) -> None:
    other = open_store(database_url)
    await other.open()
    try:
        results = await asyncio.gather(
            *(s.remember_once("ns", "race", 100.0, now=1.0) for s in [store, other] * 10)
        )
    finally:
        await other.close()
    assert results.count(True) == 1


async def test_remembered_keys_survive_reopening_and_are_forgotten_after_expiry(database_url: str) -> None:
    first = open_store(database_url)
    await first.open()
    await first.remember_once("ns", "kept", 100.0, now=1.0)
    await first.remember_once("ns", "short", 10.0, now=1.0)
    await first.close()
    reopened = open_store(database_url)
    await reopened.open()
    try:
        assert await reopened.remember_once("ns", "kept", 100.0, now=2.0) is False
        assert await reopened.forget_expired(50.0) == 1
        assert await reopened.remember_once("ns", "kept", 100.0, now=60.0) is False
        assert await reopened.forget_expired(101.0) == 1
    finally:
        await reopened.close()


async def test_sqlite_keeps_its_write_ahead_log_bounded_while_writes_go_on(
    store: Store, backend: str, database_url: str
) -> None:
    """Checkpoints run beside the writer: under steady writes the WAL is copied back and restarted,
    instead of growing with every write."""
    if backend != "sqlite":
        pytest.skip("the write-ahead log is SQLite's")
    wal = Path(database_url.removeprefix("sqlite:///") + "-wal")
    body = {"text": "x" * 2000}  # about a page per row: 4,000 rows would make a WAL of ~50 MB
    largest = 0
    for chunk in range(40):
        await asyncio.gather(*(store.mutate("Patient", f"p{chunk}-{n}", put(body)) for n in range(100)))
        largest = max(largest, wal.stat().st_size)
    assert largest < 20 * 1024 * 1024, f"the WAL grew to {largest} bytes"


@given(st.integers(0, 2**32 - 1), st.integers(0, 10**6))
def test_sqlite_counts_the_rows_between_checkpoints_across_the_wrap_of_its_change_counter(
    start: int, written: int
) -> None:
    """SQLite's ``total_changes`` is a 32-bit int: after 2**31 changed rows it reads negative. The
    rows written since the last checkpoint still count up from there, so checkpoints go on (a
    plain difference stayed negative and no checkpoint was asked for again while the log grew)."""
    from fhirbox.storage.sqlite import rows_changed_since

    def as_sqlite_reads(count: int) -> int:  # what sqlite3_total_changes() returns: signed 32 bits
        count %= 2**32
        return count - 2**32 if count >= 2**31 else count

    assert rows_changed_since(as_sqlite_reads(start), as_sqlite_reads(start + written)) == written
    assert rows_changed_since(2**31 - 10, -(2**31) + 290) == 300  # the wrap itself, as it reads


async def test_sqlite_writes_commit_while_a_checkpoint_copies_the_log(
    store: Store, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint (copying the log into the database file and syncing it: ~9 ms for 600 rows on a
    small VM) does not hold up the writes that arrive while it runs."""
    if backend != "sqlite":
        pytest.skip("the write-ahead log is SQLite's")
    from fhirbox.storage import sqlite

    copying, release = threading.Event(), threading.Event()
    real = sqlite._checkpoint

    def held_first(conn: Any) -> None:  # the first checkpoint lasts until the test lets it finish
        if not copying.is_set():
            copying.set()
            release.wait(30)
        real(conn)

    monkeypatch.setattr(sqlite, "_checkpoint", held_first)
    loop = asyncio.get_running_loop()
    try:
        for chunk in range(40):  # until the rows that start a checkpoint are written, and on
            writes = [store.mutate("Patient", f"p{chunk}-{n}", put({"n": n})) for n in range(50)]
            await asyncio.wait_for(asyncio.gather(*writes), 10)
            if copying.is_set():
                break
        assert await loop.run_in_executor(None, copying.wait, 10), "no checkpoint started"
        during = await asyncio.wait_for(store.mutate("Patient", "during", put({"n": 1})), 10)
        assert during.after is not None and during.after.version > 0
        stored = await store.read("Patient", "during")
        assert stored is not None and stored.body["n"] == 1
    finally:
        release.set()


async def test_audit_events_are_appended_once_under_their_recorded_instant(store: Store) -> None:
    recorded = "2026-03-04T05:06:07.000008Z"
    event = {"resourceType": "AuditEvent", "type": {"code": "token-issued"}, "recorded": recorded}
    await store.add([NewResource("AuditEvent", "e1", event)])
    stored = await store.read("AuditEvent", "e1")
    assert stored is not None and stored.version == 1
    assert stored.body["meta"]["lastUpdated"] == recorded and stored.body["id"] == "e1"
    versions, total = await store.history("AuditEvent", "e1", 10, 0)
    assert total == 1 and versions[0].body == stored.body
    assert await store.read_version("AuditEvent", "e1", 1) is not None
    with pytest.raises(ValueError, match="append-only"):
        await store.mutate("AuditEvent", "e1", put({}))
    found = await store.search(
        "AuditEvent", SearchQuery(comparisons=[Comparison("recorded", "lt", recorded)])
    )
    assert found.total == 0


@pytest.mark.parametrize("query", ["_READ_MANY", "_READ_CURRENT"])
async def test_reading_resources_by_key_probes_the_primary_key_in_a_plan_for_any_keys(
    database_url: str, store: Store, backend: str, query: str
) -> None:
    """Reads by key (the writer's, locked, and batched reads) use the primary key, also in the plan
    PostgreSQL keeps for any parameters and before the table was ever analysed: as a join on the keys'
    ``unnest`` that plan scanned the whole table (Sessions included) at every batch of writes."""
    if backend != "postgres":
        pytest.skip("SQLite reads by key through the primary key in every plan")
    import asyncpg

    from fhirbox.storage import postgres

    patient = {"resourceType": "Patient", "name": [{"family": "Key", "given": ["Read"]}], "birthDate": "1980"}
    await store.add([NewResource("Patient", f"k{n:04d}", patient) for n in range(400)])
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE by_key(text[], text[]) AS {getattr(postgres, query)}")
        rows = await conn.fetch("EXPLAIN EXECUTE by_key('{Patient}', '{k0001}')")
        plan = "\n".join(row[0] for row in rows)
        found = await conn.fetch("EXECUTE by_key('{Patient,Patient,Patient}', '{k0001,k0399,nope}')")
    finally:
        await conn.close()
    assert "Index Scan using resource_pkey" in plan and "Seq Scan" not in plan, plan
    assert sorted(row["id"] for row in found) == ["k0001", "k0399"]
    assert next(row["body"] for row in found if row["id"] == "k0399") is not None


async def test_appending_audit_events_waits_for_no_other_write(
    database_url: str, store: Store, backend: str
) -> None:
    """Each write holds a lock on its key (PostgreSQL, across processes): events appended on their own
    must not all share one key, or every process's failed-login records would queue behind each other."""
    if backend != "postgres":
        pytest.skip("SQLite has one writer per database file; there is no key lock to share")
    import asyncpg

    admin = await asyncpg.connect(database_url)
    try:
        await admin.execute("SELECT pg_advisory_lock(hashtext('AuditEvent'), hashtext(''))")
        event = {"resourceType": "AuditEvent", "recorded": "2026-03-04T05:06:07.000008Z"}
        await asyncio.wait_for(store.add([NewResource("AuditEvent", "e1", event)]), 10)
        assert await store.read("AuditEvent", "e1") is not None
    finally:
        await admin.close()


async def test_concurrent_reads_each_get_the_current_version_and_a_body_of_their_own(store: Store) -> None:
    """Reads that arrive together are answered together (PostgreSQL: one query for the reads waiting
    while others run): each gets its own resource, or None, and a body it may change alone."""
    await put_many(store, "Patient", {f"p{n}": {"n": n} for n in range(40)})
    await store.mutate("Patient", "gone", put({"n": -1}))
    await store.mutate("Patient", "gone", lambda current: DELETE)
    wanted = [f"p{n % 45}" for n in range(200)] + ["gone", "nul\x00id"]
    found = await asyncio.gather(*(store.read("Patient", id_) for id_ in wanted))
    for id_, stored in zip(wanted, found, strict=True):
        number = int(id_[1:]) if id_[1:].isdigit() else None
        if number is not None and number < 40:
            assert stored is not None and stored.id == id_ and stored.body["n"] == number
        elif id_ == "gone":
            assert stored is not None and stored.deleted
        else:
            assert stored is None
    first, second = [stored for id_, stored in zip(wanted, found, strict=True) if id_ == "p1"][:2]
    assert first is not None and second is not None
    first.body["n"] = "changed"
    assert second.body["n"] == 1


async def test_a_read_after_an_acknowledged_write_sees_it_even_among_concurrent_reads(store: Store) -> None:
    await store.mutate("Patient", "w", put({"v": 0}))

    async def write_then_read(value: int) -> None:
        await store.mutate("Patient", "w", put({"v": value}))
        stored = await store.read("Patient", "w")
        assert stored is not None and stored.version >= 2

    readers = [store.read("Patient", "w") for _ in range(50)]
    await asyncio.gather(write_then_read(1), *readers)
    latest = await store.read("Patient", "w")
    assert latest is not None and latest.body["v"] == 1


async def test_a_reader_that_gives_up_does_not_disturb_the_others_read_with_it(store: Store) -> None:
    await put_many(store, "Patient", {f"c{n}": {"n": n} for n in range(10)})
    tasks = [asyncio.create_task(store.read("Patient", f"c{n % 10}")) for n in range(60)]
    await asyncio.sleep(0)
    for task in tasks[::2]:
        task.cancel()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    for n, result in enumerate(results):
        if n % 2 == 0:
            assert isinstance(result, asyncio.CancelledError) or isinstance(result, Stored)
        else:
            assert isinstance(result, Stored) and result.body["n"] == n % 10
    again = await store.read("Patient", "c3")
    assert again is not None and again.body["n"] == 3


async def test_an_unstorable_id_read_with_others_is_not_found_and_fails_none_of_them(store: Store) -> None:
    await put_many(store, "Patient", {"good": {"n": 1}})
    wanted = ["good", "lone\ud800surrogate", "nul\x00", "good", "missing"]
    found = await asyncio.gather(*(store.read("Patient", id_) for id_ in wanted))
    assert [stored.body["n"] if stored else None for stored in found] == [1, None, None, 1, None]


async def test_reads_asked_while_the_store_closes_are_refused_not_left_waiting(database_url: str) -> None:
    opened = open_store(database_url)
    await opened.open()
    await opened.mutate("Patient", "p", put({"n": 1}))
    before = [asyncio.create_task(opened.read("Patient", "p")) for _ in range(20)]
    await asyncio.sleep(0)
    closing = asyncio.create_task(opened.close())
    # Just after PostgreSQL's writers stopped (reads asked then once had nobody to start them).
    while getattr(opened, "_writer", None) is not None and not closing.done():
        await asyncio.sleep(0)
    late = [asyncio.create_task(opened.read("Patient", "p")) for _ in range(5)]
    await asyncio.wait_for(closing, 30)
    _, pending = await asyncio.wait([*before, *late], timeout=10)
    assert not pending  # nothing waits forever
    for task in before:
        assert task.result() is not None
    for task in late:  # answered, or refused as the store is closed
        assert isinstance(task.exception(), RuntimeError) or task.result() is not None


async def test_audit_events_are_found_by_what_they_concern_and_by_their_other_members(
    store: Store, backend: str, database_url: str
) -> None:
    """Searches by agent, type and entity go through PostgreSQL's AuditEvent index (over those members
    only); searches by the members it leaves out (action, outcome, source) still find their events."""

    def event(n: int) -> dict[str, Any]:
        return {
            "resourceType": "AuditEvent",
            "type": {"code": "token-issued" if n % 2 else "client-created"},
            "action": "C" if n % 2 else "U",
            "outcome": "0",
            "recorded": f"2026-03-04T05:06:{n:02d}.000000Z",
            "agent": [{"who": {"reference": f"Client/c{n % 3}"}, "network": {"address": "10.0.0.1"}}],
            "source": {"observer": {"display": "http://a"}},
            "entity": [{"what": {"reference": f"Session/s{n}"}}],
        }

    await store.add([NewResource("AuditEvent", f"e{n:02d}", event(n)) for n in range(30)])

    async def found(*filters: Filter) -> list[str]:
        return sorted(ids((await store.search("AuditEvent", SearchQuery(filters=filters))).resources))

    assert await found(Filter(("agent", "who", "reference"), "Client/c1")) == [
        f"e{n:02d}" for n in range(30) if n % 3 == 1
    ]
    assert await found(
        Filter(("type", "code"), "client-created"), Filter(("entity", "what", "reference"), "Session/s4")
    ) == ["e04"]
    assert await found(Filter(("action",), "U"), Filter(("agent", "who", "reference"), "Client/c0")) == [
        f"e{n:02d}" for n in range(30) if n % 2 == 0 and n % 3 == 0
    ]
    assert await found(Filter(("source", "observer", "display"), "http://a")) == [
        f"e{n:02d}" for n in range(30)
    ]
    if backend != "postgres":
        return
    import asyncpg

    from fhirbox.storage.postgres import _SearchSql

    # With enough events for the planner to prefer it, an agent search reads the index.
    others = [dict(event(n), agent=[{"who": {"reference": f"Client/x{n}"}}]) for n in range(3000)]
    await store.add([NewResource("AuditEvent", f"m{n:04d}", body) for n, body in enumerate(others)])
    query = SearchQuery(filters=[Filter(("agent", "who", "reference"), "Client/c1")])
    sql = _SearchSql().statements("AuditEvent", query)
    assert sql is not None
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("ANALYZE audit_event")
        plan = "\n".join(row[0] for row in await conn.fetch("EXPLAIN " + sql.select, *sql.select_params))
    finally:
        await conn.close()
    assert "audit_event_search" in plan, plan


async def test_writes_in_a_stream_are_all_committed_even_when_the_store_stops_among_them(
    database_url: str,
) -> None:
    """A small batch in a steady stream waits a moment for more (SQLite's writer): a store stopped
    meanwhile still commits and answers every write it took."""
    opened = open_store(database_url)
    await opened.open()
    writes = []
    for n in range(40):
        writes.append(asyncio.create_task(opened.mutate("Patient", f"s{n}", put({"n": n}))))
        await asyncio.sleep(0.0002 if n % 3 else 0)
    await asyncio.sleep(0)
    await opened.close()
    results = await asyncio.gather(*writes, return_exceptions=True)
    done = [n for n, result in enumerate(results) if not isinstance(result, BaseException)]
    assert done == list(range(40))
    reopened = open_store(database_url)
    await reopened.open()
    try:
        for n in done:
            stored = await reopened.read("Patient", f"s{n}")
            assert stored is not None and stored.body["n"] == n
    finally:
        await reopened.close()


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux's")
async def test_sqlites_writer_never_preempts_the_event_loop(tmp_path: Path) -> None:
    """SQLite's writer thread runs under SCHED_BATCH (its wake-ups wait for the event loop's thread
    instead of taking the CPU, and the GIL, from it mid-request), and the event loop's thread keeps
    the normal policy. (PostgreSQL's store has no writer thread.)"""
    opened = open_store(f"sqlite:///{tmp_path}/fhirbox.db")
    await opened.open()
    try:
        await opened.mutate("Patient", "p", put({"n": 1}))
        writers = [t for t in threading.enumerate() if t.name == "fhirbox-writer" and t.native_id]
        assert writers, "the store has a writer thread"
        assert {os.sched_getscheduler(t.native_id or 0) for t in writers} == {os.SCHED_BATCH}
        assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER
    finally:
        await opened.close()


@pytest.mark.parametrize("thread_name", ["fhirbox-writer", "fhirbox-checkpoint"])
def test_sqlite_that_cannot_start_its_threads_says_so_and_leaves_no_connection_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, thread_name: str
) -> None:
    """A process at its thread limit: opening the store fails with the store's own error, and every
    connection it had opened is closed again (none left holding the database file)."""
    from fhirbox.storage import sqlite as sqlite_store

    opened: list[Any] = []
    connect = sqlite_store._connect

    def recording_connect(path: str) -> Any:
        conn = connect(path)
        opened.append(conn)
        return conn

    start = threading.Thread.start

    def refusing_start(thread: threading.Thread) -> None:
        if thread.name == thread_name:
            raise RuntimeError("can't start new thread")
        start(thread)

    monkeypatch.setattr(sqlite_store, "_connect", recording_connect)
    monkeypatch.setattr(threading.Thread, "start", refusing_start)
    store = open_store(f"sqlite:///{tmp_path / 'fhirbox.db'}")
    with pytest.raises(StoreUnavailable, match="can't start new thread"):
        asyncio.run(store.open())
    assert len(opened) >= 2
    for conn in opened:
        with pytest.raises(sqlite3.ProgrammingError, match="closed"):
            conn.execute("SELECT 1")


async def test_sqlite_searches_leave_the_event_loop_free_and_stop_past_their_budget(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A search's cost grows with its rows times its filters: it runs beside the event loop, which
    goes on serving meanwhile, and past its budget SQLite gives up on it (QueryTooCostly, a 400)."""
    from fhirbox.storage import sqlite as sqlite_store
    from fhirbox.storage.base import QueryTooCostly

    store = open_store(f"sqlite:///{tmp_path / 'search.db'}")
    await store.open()
    try:
        await asyncio.gather(
            *(store.mutate("Patient", f"p{n}", put({"a": {"b": {"c": n}}})) for n in range(3000))
        )
        query = SearchQuery(filters=tuple(Filter(("a", "b", "c"), str(n)) for n in range(60)))
        searching = asyncio.ensure_future(store.search("Patient", query))
        turns = 0
        while not searching.done():  # the loop's turns taken while the search runs
            turns += 1
            await asyncio.sleep(0)
        assert (await searching).resources == []
        assert turns >= 10, f"the event loop took {turns} turns during the search"

        monkeypatch.setattr(sqlite_store, "SEARCH_BUDGET", 0.0)
        monkeypatch.setattr(sqlite_store, "_PROGRESS_STEPS", 100)
        with pytest.raises(QueryTooCostly, match="narrow it"):
            await store.search("Patient", query)
        monkeypatch.undo()
        assert len((await store.search("Patient", SearchQuery(limit=5))).resources) == 5
    finally:
        await store.close()


async def test_search_looks_one_level_into_an_array_at_the_end_as_a_restricted_read_does(
    store: Store,
) -> None:
    """A SMART restriction (``system/Observation.rs?category=laboratory``) is a search filter and, on
    a read, ``matches_filters``: both backends' searches find what that check accepts and nothing
    else, so a restricted token cannot list a resource it may not read."""
    from fhirbox.storage.base import matches_filters

    bodies = {
        "flat": {"category": "laboratory"},
        "listed": {"category": ["vital", "laboratory"]},
        "nested": {"category": [["laboratory"]]},
        "number": {"category": [[5]]},
    }
    await put_many(store, "Observation", bodies)
    for value in ("laboratory", "5"):
        restriction = Filter(("category",), value)
        found = await store.search("Observation", SearchQuery(filters=(restriction,)))
        readable = [id_ for id_, body in bodies.items() if matches_filters(body, [restriction])]
        assert sorted(ids(found.resources)) == sorted(readable)
    assert sorted(
        ids(
            (
                await store.search("Observation", SearchQuery(filters=(Filter(("category",), "laboratory"),)))
            ).resources
        )
    ) == ["flat", "listed"]
