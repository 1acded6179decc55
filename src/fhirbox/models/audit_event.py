"""An ``AuditEvent``: one security-relevant thing the server did or refused, in FHIR's shape, kept small.

The shape (FHIR R4 AuditEvent, the fields fhirbox fills)::

    {"resourceType": "AuditEvent",
     "type": {"code": "token-issued"},            # one of the codes below
     "action": "C",                               # C create, R read, U update, D delete, E execute
     "recorded": "2026-11-30T05:12:03.123456Z",   # fixed-width UTC: text order is time order
     "outcome": "0",                              # 0 success, 4 minor failure, 8 serious failure
     "outcomeDesc": "unknown or inactive client", # why, for failures and closings
     "agent": [{"who": {"reference": "Client/<id>"}, "requestor": true,
                "network": {"address": "127.0.0.1", "type": "2"}}],
     "source": {"observer": {"display": "<base URL>"}},
     "entity": [{"what": {"reference": "Session/<id>"},
                 "detail": [{"type": "grant", "valueString": "client_credentials"}]}],
     "purge_after": 1772000000}                   # epoch seconds; the background purge removes it then

An agent whose authentication failed is named by the id it presented (``who.reference`` when that id
could be a Client's, else ``who.identifier.value``). No AuditEvent holds a secret, a token, or a hash of
either: builders here take only ids, names and reasons.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirbox.models import ID_PATTERN
from fhirbox.models.client import CLIENT

AUDIT_EVENT = "AuditEvent"

# ``type.code`` values (stable: documented in docs/audit.md; searches and alerts depend on them).
TOKEN_ISSUED = "token-issued"  # noqa: S105 (an event name)
TOKEN_REFRESHED = "token-refreshed"  # noqa: S105
REFRESH_TOKEN_REUSED = "refresh-token-reused"  # noqa: S105
CLIENT_AUTH_FAILED = "client-auth-failed"
CLIENT_AUTH_THROTTLED = "client-auth-throttled"
SESSION_CLOSED = "session-closed"
CLIENT_CREATED = "client-created"
CLIENT_UPDATED = "client-updated"
CLIENT_DELETED = "client-deleted"
ACCESS_POLICY_CREATED = "access-policy-created"
ACCESS_POLICY_UPDATED = "access-policy-updated"
ACCESS_POLICY_DELETED = "access-policy-deleted"
SIGNING_KEY_GENERATED = "signing-key-generated"
SIGNING_KEY_RETIRED = "signing-key-retired"
CLIENT_ASSERTION_REPLAYED = "client-assertion-replayed"

# What ``FHIRBOX_AUDIT=security`` leaves out: the routine success of issuing tokens.
ROUTINE = frozenset({TOKEN_ISSUED, TOKEN_REFRESHED})
CODES = (
    TOKEN_ISSUED,
    TOKEN_REFRESHED,
    REFRESH_TOKEN_REUSED,
    CLIENT_AUTH_FAILED,
    CLIENT_AUTH_THROTTLED,
    SESSION_CLOSED,
    CLIENT_CREATED,
    CLIENT_UPDATED,
    CLIENT_DELETED,
    ACCESS_POLICY_CREATED,
    ACCESS_POLICY_UPDATED,
    ACCESS_POLICY_DELETED,
    SIGNING_KEY_GENERATED,
    SIGNING_KEY_RETIRED,
    CLIENT_ASSERTION_REPLAYED,
)

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE = "0", "4", "8"
_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Agent:
    """Who acted: a Client id (as authenticated, or as presented when authentication failed), from
    which address. ``client_id`` None: the server itself (a background job, the command line)."""

    client_id: str | None
    address: str | None = None

    def body(self) -> dict[str, Any]:
        agent: dict[str, Any] = {"requestor": self.client_id is not None or self.address is not None}
        if self.client_id is None:
            agent["who"] = {"display": "fhirbox" if self.address is None else "unidentified client"}
        elif ID_PATTERN.match(self.client_id):
            agent["who"] = {"reference": f"{CLIENT}/{self.client_id}"}
        else:
            agent["who"] = {"identifier": {"value": self.client_id[:_MAX_TEXT]}}
        if self.address:
            agent["network"] = {"address": self.address[:_MAX_TEXT], "type": "2"}
        return agent


SERVER = Agent(None)


@dataclass(frozen=True, slots=True)
class Entity:
    """What an event concerns (``Session/<id>``, ``Client/<id>``…), with named details (no secrets)."""

    reference: str
    details: tuple[tuple[str, str], ...] = ()

    def body(self) -> dict[str, Any]:
        entity: dict[str, Any] = {"what": {"reference": self.reference}}
        if self.details:
            entity["detail"] = [
                {"type": name, "valueString": value[:_MAX_TEXT]} for name, value in self.details
            ]
        return entity


def audit_event_body(
    *,
    code: str,
    action: str,
    outcome: str,
    recorded: str,
    agent: Agent,
    observer: str,
    entities: tuple[Entity, ...] = (),
    reason: str | None = None,
    purge_after: int,
) -> dict[str, Any]:
    """An AuditEvent body (the store adds ``id`` and ``meta``)."""
    body: dict[str, Any] = {
        "resourceType": AUDIT_EVENT,
        "type": {"code": code},
        "action": action,
        "recorded": recorded,
        "outcome": outcome,
        "agent": [agent.body()],
        "source": {"observer": {"display": observer}},
        "purge_after": purge_after,
    }
    if reason:
        body["outcomeDesc"] = reason[:_MAX_TEXT]
    if entities:
        body["entity"] = [entity.body() for entity in entities]
    return body
