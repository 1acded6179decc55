"""The data of the ``console-*`` scenarios: 1,000 Clients and 100,000 AuditEvents (fewer with
``--smoke``), written straight through the Store before the server starts (the API would take
minutes), the AuditEvents spread over the last ``DAYS`` days.

The store stamps every write with the time it is made; on SQLite a single UPDATE afterwards moves
each AuditEvent's ``updated`` column and ``meta.lastUpdated`` to its ``recorded`` time, as if the audit
trail had written it then. On PostgreSQL, where 100,000 single writes take tens of minutes on a busy
machine, the AuditEvents are copied in (``COPY``) already stamped. Those two are the places here that
know the tables' layout (the current versions only: the console reads no history).
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from fhirbox.models.session import iso
from fhirbox.storage import open_store
from fhirbox.storage.base import Store, Stored

DAYS = 30
CODES = (
    ("token-issued", 70),
    ("client-auth-failed", 10),
    ("token-refreshed", 10),
    ("session-closed", 5),
    ("client-updated", 5),
)
CHUNK = 2000
SQLITE_BACKDATE = (
    "UPDATE resource SET updated = json_extract(body, '$.recorded'), "
    "body = json_set(body, '$.meta.lastUpdated', json_extract(body, '$.recorded')) "
    "WHERE type = 'AuditEvent'"
)


def client_id(n: int) -> str:
    return f"bench-client-{n:04d}"


def event(n: int, now: float, clients: int, rng: random.Random) -> dict[str, Any]:
    code = rng.choices([c for c, _ in CODES], weights=[w for _, w in CODES])[0]
    who = client_id(rng.randrange(clients))
    return {
        "resourceType": "AuditEvent",
        "type": {"code": code},
        "action": "E",
        "recorded": iso(now - rng.random() * DAYS * 86400),
        "outcome": "4" if code == "client-auth-failed" else "0",
        "agent": [{"who": {"reference": f"Client/{who}"}, "network": {"address": "10.0.0.7"}}],
        "source": {"observer": "bench"},
        "entity": [{"what": {"reference": f"Session/bench-{n}"}}],
    }


async def _write(store: Store, type_: str, id_: str, body: dict[str, Any]) -> None:
    def create(current: Stored | None) -> dict[str, Any]:
        return body

    await store.mutate(type_, id_, create)


async def seed(database_url: str, clients: int, events: int) -> None:
    store = open_store(database_url)
    await store.open()
    try:
        rng = random.Random(7)
        now = time.time()
        await asyncio.gather(*(
            _write(store, "Client", client_id(n), {
                "resourceType": "Client",
                "grant_types": ["client_credentials"],
                "scope": ["system/Patient.rs"],
                "auth": {"client_credentials": {"token_format": "jwt"}} if n % 2 else {},
            })
            for n in range(clients)
        ))  # fmt: skip
        policy = {"resourceType": "AccessPolicy", "engine": "matcho", "matcho": {"request-method": "get"}}
        for n in range(20):
            link = [{"resourceType": "Client", "id": client_id(m)} for m in range(n * 50, n * 50 + 50)]
            await _write(store, "AccessPolicy", f"bench-policy-{n:02d}", {**policy, "link": link})
        if database_url.startswith("sqlite:"):
            for start in range(0, events, CHUNK):
                await asyncio.gather(*(
                    _write(store, "AuditEvent", f"bench-event-{n:06d}", event(n, now, clients, rng))
                    for n in range(start, min(events, start + CHUNK))
                ))  # fmt: skip
    finally:
        await store.close()
    if database_url.startswith("sqlite:"):
        await _backdate(database_url)
    else:
        await _copy_events(database_url, [event(n, now, clients, rng) for n in range(events)])


async def _backdate(database_url: str) -> None:
    import sqlite3

    from fhirbox.storage.sqlite import SQLiteStore

    conn = sqlite3.connect(SQLiteStore.from_url(database_url).path)
    try:
        conn.execute(SQLITE_BACKDATE)
        conn.commit()
    finally:
        conn.close()


async def _copy_events(database_url: str, bodies: list[dict[str, Any]]) -> None:
    import asyncpg
    import orjson

    conn = await asyncpg.connect(database_url)
    try:
        await _use_schema(conn, database_url)
        versions = await conn.fetch(
            "SELECT nextval('resource_version_seq') AS v FROM generate_series(1, $1)", len(bodies)
        )
        records = []
        for n, (body, row) in enumerate(zip(bodies, versions, strict=True)):
            stamp = body["recorded"]
            body["id"] = f"bench-event-{n:06d}"
            body["meta"] = {"versionId": str(row["v"]), "lastUpdated": stamp, "createdAt": stamp}
            records.append(("AuditEvent", body["id"], row["v"], "create", stamp, orjson.dumps(body).decode()))
        await conn.copy_records_to_table(
            "resource", records=records, columns=["type", "id", "version", "op", "updated", "body"]
        )
        await conn.execute("ANALYZE resource")
    finally:
        await conn.close()


async def _use_schema(conn: Any, database_url: str) -> None:
    if "search_path=" in database_url:
        schema = database_url.split("search_path=", 1)[1].split("&")[0]
        await conn.execute(f"SET search_path TO {schema}")


def seed_console(database_url: str, *, clients: int = 1000, events: int = 100_000) -> None:
    asyncio.run(seed(database_url, clients, events))
