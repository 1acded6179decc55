"""Sessions: one ``Session`` resource per issued access token, its in-process cache and its purge.

A Session is an ordinary resource (searchable, readable, subject to authorization), except that the
hashes of its tokens are hidden from every REST response. It is written, and durable, before the
token response is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from fhirbox.storage.base import Store, Stored, now_iso

log = logging.getLogger("fhirbox.oauth.sessions")

SESSION = "Session"
# Token hashes; never shown, never searchable.
HIDDEN_FIELDS = ("access_token", "refresh_token", "refresh_token_history")
# Rotated refresh tokens remembered per Session, to detect their reuse (RFC 9700 §4.14).
REFRESH_HISTORY = 50


def purge_time(exp: int, refresh_exp: int | None, has_refresh: bool, retention: int) -> int | None:
    """When a Session may be purged: ``retention`` after its last token expires (never, if that never)."""
    if has_refresh and refresh_exp is None:
        return None
    return max(exp, refresh_exp or 0) + retention


def new_session(
    *,
    session_id: str,
    client_id: str,
    issuer: str,
    issued_at: int,
    expires_at: int,
    audience: str | None,
    scope: list[str] | None,
    access_hash: str,
    refresh_hash: str | None,
    refresh_expires_at: int | None,
    retention: int,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "resourceType": SESSION,
        "id": session_id,
        "type": "client_credentials",
        "client": {"id": client_id, "resourceType": "Client"},
        "jti": session_id,
        "iss": issuer,
        "start": now_iso(),
        "active": True,
        "exp": expires_at,
        "access_token": access_hash,
    }
    if audience is not None:
        body["audience"] = audience
    if scope:
        body["scope"] = scope
    if refresh_hash is not None:
        body["refresh_token"] = refresh_hash
        if refresh_expires_at is not None:
            body["refresh_token_exp"] = refresh_expires_at
    purge_after = purge_time(expires_at, refresh_expires_at, refresh_hash is not None, retention)
    if purge_after is not None:
        body["purge_after"] = purge_after
    return body


def closed(body: dict[str, Any], retention: int, reason: str) -> dict[str, Any]:
    """The Session ended now: inactive, with ``end``, purged after ``retention``."""
    new = dict(body)
    new.update(active=False, end=now_iso(), end_reason=reason, purge_after=int(time.time()) + retention)
    new.pop("meta", None)
    return new


def public_view(body: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in body.items() if key not in HIDDEN_FIELDS}


@dataclass(slots=True)
class CachedSession:
    body: dict[str, Any]
    # The hash of the access JWT already verified in this process, and its claims.
    verified_hash: str | None = None
    claims: dict[str, Any] | None = None
    view: dict[str, Any] | None = field(default=None)

    def public(self) -> dict[str, Any]:
        if self.view is None:
            self.view = public_view(self.body)
        return self.view


class SessionCache:
    """Live Sessions by id, bounded (least recently used dropped), evicted on every Session write.

    ``store.subscribe`` reports writes of this process at once and of other processes within the
    change-poll interval, so a revocation anywhere is seen here well within a second.
    """

    def __init__(self, store: Store, max_entries: int = 100_000) -> None:
        self.store = store
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CachedSession] = OrderedDict()
        self._writes = 0
        store.subscribe(self._changed)

    def _changed(self, type_: str, id_: str) -> None:
        if type_ == SESSION:
            self._writes += 1
            self._entries.pop(id_, None)

    def put(self, stored: Stored) -> None:
        """Remember a Session just written by this process (saves the first bearer request a read)."""
        self._store(stored.id, CachedSession(stored.body))

    def _store(self, session_id: str, entry: CachedSession) -> None:
        self._entries[session_id] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, session_id: str) -> CachedSession | None:
        """The current Session (active or not), or None when it does not exist."""
        entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
            return entry
        writes = self._writes
        stored = await self.store.read(SESSION, session_id)
        if stored is None or stored.deleted:
            return None
        entry = CachedSession(stored.body)
        # A Session written while we were reading may be newer than what we read: do not cache it.
        if writes == self._writes:
            self._store(session_id, entry)
        return entry


class SessionPurge:
    """Removes Sessions whose ``purge_after`` has passed, every ``interval`` seconds, in the background."""

    def __init__(self, store: Store, retention: int) -> None:
        self.store = store
        self.interval = min(60.0, max(0.5, retention / 2))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                purged = await self.store.purge(SESSION, ("purge_after",), time.time())
                if purged:
                    log.info("purged %d expired Sessions", purged)
            except Exception:
                log.exception("purging expired Sessions failed")
            await asyncio.sleep(self.interval)
