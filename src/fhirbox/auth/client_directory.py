"""Clients as the authentication layer sees them: cached lookups, secret checks, and how a Client
body is prepared for storage (validated, its secret hashed)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from fhirbox.audit import Audit
from fhirbox.auth.secrets import SecretVerifier, hash_secret
from fhirbox.auth.throttle import FailureCounter, Throttled
from fhirbox.models import ID_PATTERN
from fhirbox.models.audit_event import (
    CLIENT_ASSERTION_REPLAYED,
    CLIENT_AUTH_FAILED,
    CLIENT_AUTH_THROTTLED,
    MINOR_FAILURE,
    SERIOUS_FAILURE,
    Agent,
    Entity,
)
from fhirbox.models.client import CLIENT, Client
from fhirbox.storage.base import Store

_MAX_CACHED = 10_000


def _not_counted(reason: str) -> None:
    return None


class ClientDirectory:
    """Looks up Clients, caching them in process; every write anywhere evicts the entry."""

    def __init__(
        self,
        store: Store,
        verifier: SecretVerifier,
        failures: FailureCounter,
        audit: Audit,
        *,
        count_failure: Callable[[str], None] = _not_counted,
    ) -> None:
        self.store = store
        self.audit = audit
        self.verifier = verifier
        self.failures = failures
        # Told the reason of every failed authentication: unknown_client, invalid_secret, throttled.
        self.count_failure = count_failure
        self._cache: dict[str, Client | None] = {}
        # Bumped on every Client change: a lookup that overlapped a change must not cache what it read.
        self._generation = 0
        store.subscribe(self._changed)

    def _changed(self, type_: str, id_: str) -> None:
        if type_ == CLIENT:
            self._generation += 1
            self._cache.pop(id_, None)
            self.verifier.forget(id_)

    async def get(self, client_id: str) -> Client | None:
        """The live Client, or None when it does not exist, was deleted or is inactive."""
        if client_id in self._cache:
            return self._cache[client_id]
        generation = self._generation
        stored = await self.store.read(CLIENT, client_id)
        client = Client(stored) if stored is not None else None
        if client is not None and not client.is_active:
            client = None
        if generation == self._generation:
            if len(self._cache) > _MAX_CACHED:
                self._cache.clear()
            self._cache[client_id] = client
        return client

    async def authenticate_any(
        self, readings: Sequence[tuple[str, str]], address: str, method: str
    ) -> Client | None:
        """The Client of the first ``(id, secret)`` reading that authenticates (see ``decode_basic``),
        presented from ``address`` (``Request.client_addr``) by ``method`` (e.g. ``client_secret_basic``).
        A failure is recorded in the audit trail (the id presented, the method, the reason; never the
        secret), and so is the lock it may set off.

        Raises ``Throttled`` before any hash when that address, or one of the ids at it, has failed too
        often (``FailureCounter``), and ``HashBusy`` when a hash is needed and the pool is full. A
        reading verified before is accepted without hashing; otherwise only readings of existing
        Clients are hashed (the first reading when none exists, so an unknown id costs one hash).
        """
        # An id no Client can have is refused before any lookup, cache entry or counter key of its own.
        presented = readings[0][0] if readings else ""
        readings = [(client_id, secret) for client_id, secret in readings if ID_PATTERN.match(client_id)]
        client_ids = list(dict.fromkeys(client_id for client_id, _ in readings))
        try:
            self.failures.check(client_ids, address)
        except Throttled:
            self.count_failure("throttled")
            raise
        found = [(await self.get(client_id), client_id, secret) for client_id, secret in readings]
        for client, client_id, secret in found:
            if client is not None and self.verifier.remembers(client_id, secret, client.version):
                self.failures.succeeded(client_id, address)
                return client
        if not readings:
            await self._failed([], address, presented, method, "malformed client id")
            self.count_failure("unknown_client")
            return None
        # An unknown id is checked against a dummy hash (``verify`` with None): the same cost as a known one.
        existing = [reading for reading in found if reading[0] is not None]
        for client, client_id, secret in existing or found[:1]:
            hashed = client.secret_hash if client is not None else None
            version = client.version if client is not None else 0
            if await self.verifier.verify(client_id, secret, hashed, version) and client is not None:
                self.failures.succeeded(client_id, address)
                return client
        reason = "invalid secret" if existing else "unknown or inactive client"
        await self._failed(client_ids, address, client_ids[0], method, reason)
        self.count_failure("invalid_secret" if existing else "unknown_client")
        return None

    async def failed_elsewhere(
        self, client_id: str | None, address: str, method: str, reason: str, *, replayed: bool = False
    ) -> None:
        """Count and record a failed authentication checked outside this directory (a client
        assertion), exactly as a wrong secret is: ``client_id`` is the id it claimed, if any. A
        replayed assertion (``replayed``) is recorded as ``client-assertion-replayed``, a serious
        failure: its signature verified, so someone holds a copy of a valid assertion."""
        named = [client_id] if client_id is not None else []
        await self._failed(named, address, client_id or "", method, reason, replayed=replayed)

    async def _failed(
        self,
        client_ids: list[str],
        address: str,
        presented: str,
        method: str,
        reason: str,
        *,
        replayed: bool = False,
    ) -> None:
        """Count the failure, and record it (and any lock it set off) in the audit trail."""
        locked = self.failures.failed(client_ids, address)
        audit = self.audit
        entities = (Entity(f"{CLIENT}/{client_ids[0]}", (("method", method),)),) if client_ids else ()
        failed = audit.event(
            CLIENT_ASSERTION_REPLAYED if replayed else CLIENT_AUTH_FAILED,
            action="E",
            agent=Agent(presented, address),
            outcome=SERIOUS_FAILURE if replayed else MINOR_FAILURE,
            entities=entities,
            reason=f"{reason} ({method})",
        )
        throttled = [
            audit.event(
                CLIENT_AUTH_THROTTLED,
                action="E",
                agent=Agent(key[1] if key[0] == "client" else None, address),
                outcome=SERIOUS_FAILURE,
                reason=f"{self.failures.limit} failed client authentications within "
                f"{self.failures.window} s: further attempts refused (429)",
            )
            for key in locked
        ]
        await audit.record(failed, *throttled)


async def prepare_client_write(body: dict[str, Any]) -> None:
    """The write rule for Clients: refuse an invalid body (422), keep only a hash of ``secret``."""
    Client.validate(body)
    secret = body.get("secret")
    if isinstance(secret, str):
        body["secret"] = await asyncio.to_thread(hash_secret, secret)
