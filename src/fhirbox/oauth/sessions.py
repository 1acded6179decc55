"""Sessions as the OAuth server keeps them: an in-process cache, closing, and the background purge.

The shape and rules of a Session are in ``fhirbox.models.session``. A Session is written, and
durable, before the token response is sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhirbox.background import Periodic
from fhirbox.clock import Clock
from fhirbox.metrics import NOT_COUNTED, CacheCounts
from fhirbox.models.session import SESSION, Session
from fhirbox.storage.base import UNCHANGED, Attach, Filter, SearchQuery, Store, Stored

log = logging.getLogger("fhirbox.oauth.sessions")

_CLOSE_PAGE = 500


# Sessions kept in memory per process. Each is three objects the garbage collector walks in every full
# collection: 100,000 made those pauses reach 90 ms under load; past this many Sessions in use, a
# bearer request may read its Session from the database (one point read by primary key).
MAX_ENTRIES = 10_000


@dataclass(slots=True)
class CachedSession:
    session: Session
    # The hash of the access JWT already verified in this process, and its claims.
    verified_hash: str | None = None
    claims: dict[str, Any] | None = None
    view: dict[str, Any] | None = field(default=None)

    def public(self) -> dict[str, Any]:
        if self.view is None:
            self.view = self.session.public_view()
        return self.view


class SessionCache:
    """Live Sessions by id, bounded (least recently used dropped), evicted on every Session write.

    ``store.subscribe`` reports writes of this process at once; before an entry is trusted,
    ``store.catch_up`` reports what other processes committed (SQLite: when its change counter moved;
    PostgreSQL: once the notifications committed before the request have arrived, a round trip shared
    by the requests waiting), so a Session closed anywhere is seen closed by the next request here.
    """

    def __init__(
        self, store: Store, max_entries: int = MAX_ENTRIES, *, counts: CacheCounts = NOT_COUNTED
    ) -> None:
        self.store = store
        self.counts = counts
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
        self._store(stored.id, CachedSession(Session(stored.body)))

    def _store(self, session_id: str, entry: CachedSession) -> None:
        self._entries[session_id] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def get(self, session_id: str) -> CachedSession | None:
        """The current Session (active or not), or None when it does not exist."""
        entry = self._entries.get(session_id)
        if entry is not None:
            fence = self.store.catch_up()
            # Shielded: the fence is shared, and a request cancelled while it waits must not cancel it
            # for the others.
            if fence is not None and not await asyncio.shield(fence):
                self._entries.pop(session_id, None)  # cannot tell whether it changed: read it
            entry = self._entries.get(session_id)
        if entry is not None:
            self._entries.move_to_end(session_id)
            self.counts.hit()
            return entry
        self.counts.miss()
        writes = self._writes
        stored = await self.store.read(SESSION, session_id)
        if stored is None or stored.deleted:
            return None
        entry = CachedSession(Session(stored.body))
        # A Session written while we were reading may be newer than what we read: do not cache it.
        if writes == self._writes:
            self._store(session_id, entry)
        return entry


async def close_session(
    store: Store,
    session_id: str,
    reason: str,
    *,
    now: float,
    retention: int,
    only_holding: str | None = None,
    attach: Attach | None = None,
) -> Stored | None:
    """Close the Session if it is active (and, with ``only_holding``, holds that token hash), with what
    ``attach`` adds (its audit record) in the same transaction.

    Returns the Session as stored afterwards (unchanged when it was already closed), or None when
    it does not exist.
    """

    def end(current: Stored | None) -> dict[str, Any] | Any:
        if current is None or current.deleted:
            return UNCHANGED
        session = Session(current.body)
        if only_holding is not None and not session.holds(only_holding):
            return UNCHANGED
        if not session.active:
            return UNCHANGED
        return session.close(reason, now, retention)

    result = await store.mutate(SESSION, session_id, end, attach=attach)
    return result.after


async def close_client_sessions(
    store: Store,
    client_id: str,
    reason: str,
    *,
    now: float,
    retention: int,
    attach: Callable[[str], Attach | None] | None = None,
) -> int:
    """Close every active Session of ``client_id``; the number closed. ``attach(session_id)`` gives
    what to commit with each closing."""
    query = SearchQuery(
        filters=(Filter(("client", "id"), client_id), Filter(("active",), "true")), limit=_CLOSE_PAGE
    )
    closed = 0
    while True:
        page = await store.search(SESSION, query)
        closed_now = 0
        for body in page.resources:
            session_id = str(body["id"])
            after = await close_session(
                store,
                session_id,
                reason,
                now=now,
                retention=retention,
                attach=attach(session_id) if attach is not None else None,
            )
            closed_now += after is not None and after.body.get("end_reason") == reason
        closed += closed_now
        # A full page that closed nothing holds Sessions no close applies to: searching again finds them.
        if len(page.resources) < _CLOSE_PAGE or closed_now == 0:
            return closed


async def count_active_sessions(store: Store) -> int:
    """Sessions not closed (``active``), expired ones included until closed or purged."""
    page = await store.search(SESSION, SearchQuery(filters=(Filter(("active",), "true"),), limit=1))
    return page.total or 0


class SessionPurge(Periodic):
    """Removes Sessions whose ``purge_after`` has passed, and expired ``Store.remember_once`` records
    (client assertion ids), every ``interval`` seconds, in the background."""

    def __init__(self, store: Store, retention: int, clock: Clock) -> None:
        super().__init__(min(60.0, max(0.5, retention / 2)))
        self.store = store
        self.clock = clock

    async def purge_once(self) -> int:
        """Remove every Session past its ``purge_after``; the number removed."""
        return await self.store.purge(SESSION, ("purge_after",), self.clock())

    async def run_once(self) -> None:
        purged = await self.purge_once()
        if purged:
            log.info("purged %d expired Sessions", purged)
        await self.store.forget_expired(self.clock())
