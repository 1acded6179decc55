"""Schema migrations: a database created by an older version is upgraded at start, data intact."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from fhirbox.app import create_app
from fhirbox.models.session import iso
from fhirbox.settings import Settings
from fhirbox.storage import base, migrations, open_store
from fhirbox.storage.base import Stored
from tests.support import ROOT, ServerProcess

Steps = tuple[tuple[int, tuple[str, ...]], ...]


def steps_name(settings: Settings) -> str:
    return "SQLITE" if settings.database_url.startswith("sqlite") else "POSTGRES"


def replace_with(body: dict[str, Any]) -> Callable[[Stored | None], dict[str, Any]]:
    return lambda current: dict(body)


async def write_with_schema(settings: Settings, steps: Steps, monkeypatch: pytest.MonkeyPatch) -> None:
    """Create the database as a version whose migrations were only ``steps`` would, and store data."""
    with monkeypatch.context() as patch:
        patch.setattr(migrations, steps_name(settings), steps)
        store = open_store(settings.database_url)
        await store.open()
        try:
            for n in range(3):
                await store.mutate("Patient", f"old{n}", replace_with({"n": n, "name": [{"family": "Old"}]}))
            await store.mutate("Patient", "old0", replace_with({"n": 10}))
        finally:
            await store.close()


async def test_an_older_database_is_upgraded_by_the_current_server(
    settings: Settings, server_factory: Callable[..., ServerProcess], monkeypatch: pytest.MonkeyPatch
) -> None:
    steps: Steps = getattr(migrations, steps_name(settings))
    if len(steps) < 2:
        pytest.skip("only one schema version exists so far: nothing older to upgrade from")
    await write_with_schema(settings, steps[:-1], monkeypatch)
    server = server_factory(url=settings.database_url)
    with server.client(auth=ROOT) as http:
        assert http.get("/Patient/old0").json()["n"] == 10
        assert http.get("/Patient/old1").json()["n"] == 1
        assert http.get("/Patient", params={"name.family": "Old"}).json()["total"] == 2  # old0 lost its name
        assert len(http.get("/Patient/old0/_history").json()["entry"]) == 2


async def test_a_new_migration_is_applied_on_start_without_losing_data(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    current: Steps = getattr(migrations, steps_name(settings))
    await write_with_schema(settings, current, monkeypatch)
    latest = current[-1][0]
    # The next version of fhirbox: one more step, as a release would append it.
    upgraded = (*current, (latest + 1, ("CREATE INDEX resource_test_upgrade ON resource (type, version)",)))
    monkeypatch.setattr(migrations, steps_name(settings), upgraded)
    app = create_app(settings)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=ROOT) as http:
            assert (await http.get("/Patient/old0")).json()["n"] == 10
            assert (await http.get("/Patient/old2")).json()["name"] == [{"family": "Old"}]
            history = (await http.get("/Patient/old0/_history")).json()
            assert [entry["resource"]["n"] for entry in history["entry"]] == [10, 0]
            assert (await http.put("/Patient/new", json={})).status_code == 201
    finally:
        await app.shutdown()
    # Starting again applies nothing twice and keeps everything.
    again = open_store(settings.database_url)
    await again.open()
    try:
        stored = await again.read("Patient", "old1")
        assert isinstance(stored, Stored) and stored.body["n"] == 1
        assert await again.read("Patient", "new") is not None
    finally:
        await again.close()


async def test_audit_events_of_an_older_database_move_to_their_own_table(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before schema 5, AuditEvents were ordinary resources (a row in ``resource`` and in ``history``)."""
    steps: Steps = getattr(migrations, steps_name(settings))
    week_ago, hour_ago = iso(time.time() - 7 * 86400), iso(time.time() - 3600)
    with monkeypatch.context() as patch:
        patch.setattr(migrations, steps_name(settings), tuple(step for step in steps if step[0] < 5))
        patch.setattr(base, "APPEND_ONLY", "-")  # AuditEvent written as any resource, as it was then
        store = open_store(settings.database_url)
        await store.open()
        try:
            for n, recorded in enumerate((week_ago, hour_ago)):
                event = {"resourceType": "AuditEvent", "type": {"code": "token-issued"}, "recorded": recorded}
                await store.mutate("AuditEvent", f"old-{n}", replace_with(event))
        finally:
            await store.close()
    app = create_app(settings)
    await app.startup()
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=ROOT) as http:
            assert (await http.get("/AuditEvent/old-1")).json()["recorded"] == hour_ago
            later = await http.get("/AuditEvent", params={"recorded": f"gt{week_ago}", "_id": "old-0,old-1"})
            assert [entry["resource"]["id"] for entry in later.json()["entry"]] == ["old-1"]
            assert len((await http.get("/AuditEvent/old-0/_history")).json()["entry"]) == 1
        # Kept under their recorded instant: a purge of what is older than a day removes one.
        assert await app.store.purge_appended(iso(time.time() - 86400)) == 1
        assert await app.store.read("AuditEvent", "old-0") is None
        assert await app.store.read("AuditEvent", "old-1") is not None
    finally:
        await app.shutdown()
