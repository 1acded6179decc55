"""The audit trail: AuditEvents written with the change they record, and the background purge.

Built once in ``app.py`` and passed to whatever records events. An event that records a change (a
token issued, a Session closed, a Client written) is attached to that change's ``store.mutate``, so it
is committed in the same transaction: an acknowledged token always has its record, and a change that
failed has none. An event with no change to ride on (a failed authentication, a throttle, a replayed
assertion) is written by ``record``: batched with other writes by the store, and awaited, so the
response leaves only once the record is durable (memory stays bounded by the requests in flight).

``FHIRBOX_AUDIT``: ``all`` records every event; ``security`` all but the routine ``token-issued`` and
``token-refreshed``; ``off`` none (nothing is built, nothing attached).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from fhirbox.background import Periodic
from fhirbox.clock import Clock
from fhirbox.ids import UniqueIds
from fhirbox.models.audit_event import (
    AUDIT_EVENT,
    ROUTINE,
    SESSION_CLOSED,
    SUCCESS,
    Agent,
    Entity,
    audit_event_json,
)
from fhirbox.models.session import SESSION, iso
from fhirbox.storage.base import Appended, Attach, MutationResult, Store

log = logging.getLogger("fhirbox.audit")

# From the client id and address of an API call, what to commit with its write (None: nothing).
WriteRecord = Callable[[str | None, str], Attach | None]

LEVELS = ("all", "security", "off")


class Audit:
    """Builds AuditEvents and hands them to the store: attached to a write, or on their own."""

    def __init__(self, store: Store, level: str, retention: int, clock: Clock, observer: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"audit level must be one of {', '.join(LEVELS)}, got {level!r}")
        self.store = store
        self.level = level
        self.retention = retention
        self.clock = clock
        self.observer = observer
        self.ids = UniqueIds()

    def wants(self, code: str) -> bool:
        """Whether events of ``code`` are recorded at this level."""
        return self.level == "all" or (self.level == "security" and code not in ROUTINE)

    def event(
        self,
        code: str,
        *,
        action: str,
        agent: Agent,
        outcome: str = SUCCESS,
        entities: tuple[Entity, ...] = (),
        reason: str | None = None,
    ) -> Appended | None:
        """A new AuditEvent of ``code`` (ready to store), or None when this level does not record it."""
        if not self.wants(code):
            return None
        recorded = iso(self.clock())
        event_id = self.ids.next()
        text = audit_event_json(
            event_id,
            code=code,
            action=action,
            outcome=outcome,
            recorded=recorded,
            agent=agent,
            observer=self.observer,
            entities=entities,
            reason=reason,
        )
        return Appended(AUDIT_EVENT, event_id, 1, "create", recorded, text)

    @staticmethod
    def attach(
        always: Sequence[Appended | None] = (), if_changed: Sequence[Appended | None] = ()
    ) -> Attach | None:
        """What ``store.mutate(..., attach=)`` takes: ``always`` whatever the write decided, and
        ``if_changed`` only when it changed something; None when there is nothing to record."""
        fixed = [event for event in always if event is not None]
        on_change = [event for event in if_changed if event is not None]
        if not on_change:
            return (lambda _result: fixed) if fixed else None
        if fixed:
            on_change = fixed + on_change

        def events(result: MutationResult) -> Sequence[Appended]:
            after = result.after
            return on_change if after is not None and after is not result.before else fixed

        return events

    def session_closed(self, session_id: str, agent: Agent, reason: str) -> Appended | None:
        """A Session was closed (revoked) by ``agent`` for ``reason``."""
        return self.event(
            SESSION_CLOSED,
            action="D",
            agent=agent,
            entities=(Entity(f"{SESSION}/{session_id}"),),
            reason=reason,
        )

    def closing(self, agent: Agent, reason: str) -> Callable[[str], Attach | None]:
        """For ``close_session``/``close_client_sessions``: the record of each Session closed."""
        return lambda session_id: self.attach(if_changed=[self.session_closed(session_id, agent, reason)])

    def resource_writes(self, codes: tuple[str, str, str]) -> WriteRecord:
        """For ``ResourceRules.record_writes``: a created / updated / deleted event (``codes``, in that
        order) for each change of a resource through the API, naming it and its version, nothing of
        its content."""

        def record(client_id: str | None, address: str) -> Attach | None:
            if not any(self.wants(code) for code in codes):
                return None
            agent = Agent(client_id, address)

            def events(result: MutationResult) -> Sequence[Appended]:
                after = result.after
                if after is None or after is result.before:
                    return ()
                code, action = (
                    (codes[2], "D")
                    if after.deleted
                    else (codes[0], "C")
                    if result.created
                    else (codes[1], "U")
                )
                reference = Entity(f"{after.type}/{after.id}", (("version", str(after.version)),))
                event = self.event(code, action=action, agent=agent, entities=(reference,))
                return (event,) if event is not None else ()

            return events

        return record

    async def record(self, *events: Appended | None) -> None:
        """Write events that ride on no change, durably, batched with other writes; returns once
        stored. A failure to store them is logged, never turned into the caller's error."""
        wanted = [event for event in events if event is not None]
        if not wanted:
            return
        try:
            await self.store.add(wanted)
        except Exception:
            log.exception("writing %d audit events failed", len(wanted))


class AuditPurge(Periodic):
    """Removes AuditEvents recorded more than ``FHIRBOX_AUDIT_RETENTION`` seconds ago."""

    def __init__(self, store: Store, clock: Clock, retention: int, interval: float = 60.0) -> None:
        super().__init__(interval)
        self.store = store
        self.clock = clock
        self.retention = retention

    async def purge_once(self) -> int:
        """Remove every AuditEvent recorded before the retention period; the number removed."""
        return await self.store.purge_appended(iso(self.clock() - self.retention))

    async def run_once(self) -> None:
        purged = await self.purge_once()
        if purged:
            log.info("purged %d AuditEvents past FHIRBOX_AUDIT_RETENTION", purged)
