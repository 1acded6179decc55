"""The root Client, ensured at every start (Aidbox's BOX_ROOT_CLIENT_ID / BOX_ROOT_CLIENT_SECRET)."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from fhirbox.auth.clients import CLIENT
from fhirbox.auth.secrets import hash_secret, verify_secret
from fhirbox.settings import Settings
from fhirbox.storage.base import Store, Stored

ROOT_GRANT_TYPES = ["basic", "client_credentials"]


async def ensure_root_client(store: Store, settings: Settings) -> str | None:
    """Create or update the root Client. Returns the secret when one was generated (first start)."""
    client_id = settings.root_client_id
    current = await store.read(CLIENT, client_id)
    live = current is not None and not current.deleted
    stored_hash = current.body.get("secret") if live and current is not None else None
    secret = settings.root_client_secret
    generated = None
    if secret is None:
        if isinstance(stored_hash, str) and _is_root_shaped(current):
            return None
        secret = generated = secrets.token_urlsafe(24)
    elif (
        isinstance(stored_hash, str)
        and _is_root_shaped(current)
        and await asyncio.to_thread(verify_secret, secret, stored_hash)
    ):
        return None
    hashed = await asyncio.to_thread(hash_secret, secret)

    def mutation(latest: Stored | None) -> dict[str, Any]:
        body = dict(latest.body) if latest is not None and not latest.deleted else {}
        body.pop("meta", None)
        body.update(resourceType=CLIENT, id=client_id, secret=hashed, active=True)
        grant_types = list(body.get("grant_types") or [])
        body["grant_types"] = grant_types + [g for g in ROOT_GRANT_TYPES if g not in grant_types]
        return body

    await store.mutate(CLIENT, client_id, mutation)
    return generated


def _is_root_shaped(current: Stored | None) -> bool:
    if current is None:
        return False
    grants = current.body.get("grant_types") or []
    return current.body.get("active", True) is not False and all(g in grants for g in ROOT_GRANT_TYPES)
