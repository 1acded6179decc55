"""Clients as the authentication layer sees them: cached lookups and the rules for writing a Client."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from fhirbox.auth.secrets import SecretVerifier, hash_secret
from fhirbox.http.errors import HttpError
from fhirbox.rest.rules import ResourceRules
from fhirbox.storage.base import Store, Stored

CLIENT = "Client"
ClientCheck = Callable[[dict[str, Any]], None]


class ClientDirectory:
    """Looks up Clients, caching them in process; every write anywhere evicts the entry."""

    def __init__(self, store: Store, verifier: SecretVerifier) -> None:
        self.store = store
        self.verifier = verifier
        self._cache: dict[str, Stored | None] = {}
        # Bumped on every Client change: a lookup that overlapped a change must not cache what it read.
        self._generation = 0
        store.subscribe(self._changed)

    def _changed(self, type_: str, id_: str) -> None:
        if type_ == CLIENT:
            self._generation += 1
            self._cache.pop(id_, None)
            self.verifier.forget(id_)

    async def get(self, client_id: str) -> Stored | None:
        """The live Client, or None when it does not exist, was deleted or is inactive."""
        if client_id in self._cache:
            return self._cache[client_id]
        generation = self._generation
        stored = await self.store.read(CLIENT, client_id)
        if stored is not None and (stored.deleted or stored.body.get("active") is False):
            stored = None
        if generation == self._generation:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[client_id] = stored
        return stored

    async def authenticate(self, client_id: str, secret: str) -> Stored | None:
        """The Client when ``secret`` is its secret; None otherwise (same cost for unknown ids)."""
        client = await self.get(client_id)
        hashed = client.body.get("secret") if client is not None else None
        if not isinstance(hashed, str):
            hashed = None
        version = client.version if client is not None else 0
        if await self.verifier.verify(client_id, secret, hashed, version):
            return client
        return None


def install_client_rules(rules: ResourceRules, checks: list[ClientCheck]) -> None:
    """Hash ``secret`` on every write and keep it out of every response; run ``checks`` (422s)."""

    async def prepare(body: dict[str, Any]) -> None:
        grant_types = body.get("grant_types", [])
        if not isinstance(grant_types, list) or not all(isinstance(g, str) for g in grant_types):
            raise HttpError(422, "grant_types must be a list of strings")
        if "active" in body and not isinstance(body["active"], bool):
            raise HttpError(422, "active must be true or false")
        for check in checks:
            check(body)
        secret = body.get("secret")
        if secret is not None:
            if not isinstance(secret, str) or not secret:
                raise HttpError(422, "secret must be a non-empty string")
            body["secret"] = await asyncio.to_thread(hash_secret, secret)

    rules.on_write(CLIENT, prepare)
    rules.hide_fields(CLIENT, "secret")
