"""The root Client, ensured at every start (Aidbox's BOX_ROOT_CLIENT_ID / BOX_ROOT_CLIENT_SECRET)."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from typing import Any

from fhirbox.auth.secrets import hash_secret, verify_secret
from fhirbox.http.errors import HttpError
from fhirbox.models.client import CLIENT, Client
from fhirbox.storage.base import Store, Stored

ROOT_GRANT_TYPES = ["basic", "client_credentials"]


async def ensure_root_client(store: Store, client_id: str, secret: str | None) -> str | None:
    """Create or update the root Client. Returns the secret when one was generated (first start)."""
    current = await store.read(CLIENT, client_id)
    root = Client(current) if current is not None and _is_root_shaped(Client(current)) else None
    generated = None
    if secret is None:
        if root is not None and root.secret_hash is not None:
            return None
        secret = generated = secrets.token_urlsafe(24)
    elif (
        root is not None
        and root.secret_hash is not None
        and await asyncio.to_thread(verify_secret, secret, root.secret_hash)
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


def root_guard(root_client_id: str) -> Callable[[str, dict[str, Any] | None], None]:
    """A write guard for Clients: the root client is configured by FHIRBOX_ROOT_CLIENT_ID and
    FHIRBOX_ROOT_CLIENT_SECRET, never through the API (a client allowed to write Clients could
    otherwise set root's secret and become root)."""

    def guard(client_id: str, body: dict[str, Any] | None) -> None:
        if client_id == root_client_id:
            what = "deleted" if body is None else "deactivated" if body.get("active") is False else "changed"
            raise HttpError(
                409,
                f"The root client cannot be {what} through the API; "
                "set FHIRBOX_ROOT_CLIENT_SECRET and restart to change its secret",
            )

    return guard


def _is_root_shaped(client: Client) -> bool:
    return client.is_active and all(client.allows_grant(g) for g in ROOT_GRANT_TYPES)


class RootClient:
    """The root Client as a start-up step; remembers a secret it generated, to be shown once."""

    def __init__(self, store: Store, client_id: str, secret: str | None) -> None:
        self.store = store
        self.client_id = client_id
        self.secret = secret
        self.generated_secret: str | None = None

    async def ensure(self) -> None:
        self.generated_secret = await ensure_root_client(self.store, self.client_id, self.secret)
