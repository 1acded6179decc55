"""The data of the ``console-*`` scenarios: 1,000 Clients and 100,000 AuditEvents (fewer with
``--smoke``), written straight through the Store before the server starts (the API would take
minutes), the AuditEvents spread over the last ``DAYS`` days.

The store keeps an AuditEvent under its ``recorded`` time, so these are stored as if the audit trail
had written them then; ``Store.add`` writes a chunk of them in one transaction.
"""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

from fhirbox.models.session import iso
from fhirbox.storage import open_store
from fhirbox.storage.base import NewResource, Store, Stored

DAYS = 30
CODES = (
    ("token-issued", 70),
    ("client-auth-failed", 10),
    ("token-refreshed", 10),
    ("session-closed", 5),
    ("client-updated", 5),
)
CHUNK = 2000


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
        for start in range(0, events, CHUNK):
            await store.add([
                NewResource("AuditEvent", f"bench-event-{n:06d}", event(n, now, clients, rng))
                for n in range(start, min(events, start + CHUNK))
            ])  # fmt: skip
    finally:
        await store.close()


def seed_console(database_url: str, *, clients: int = 1000, events: int = 100_000) -> None:
    asyncio.run(seed(database_url, clients, events))
