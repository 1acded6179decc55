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
                 "detail": [{"type": "grant", "valueString": "client_credentials"}]}]}

An agent whose authentication failed is named by the id it presented (``who.reference`` when that id
could be a Client's, else ``who.identifier.value``). No AuditEvent holds a secret, a token, or a hash of
either: builders here take only ids, names and reasons.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

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


class Agent(NamedTuple):
    """Who acted: a Client id (as authenticated, or as presented when authentication failed), from
    which address. ``client_id`` None: the server itself (a background job, the command line)."""

    client_id: str | None
    address: str | None = None

    def body(self) -> dict[str, Any]:
        """The ``agent`` item (shared between events of one agent: never change it)."""
        return _agent_body(self.client_id, self.address)


@functools.lru_cache(maxsize=256)
def _agent_body(client_id: str | None, address: str | None) -> dict[str, Any]:
    agent: dict[str, Any] = {"requestor": client_id is not None or address is not None}
    if client_id is None:
        agent["who"] = {"display": "fhirbox" if address is None else "unidentified client"}
    elif ID_PATTERN.match(client_id):
        agent["who"] = {"reference": f"{CLIENT}/{client_id}"}
    else:
        agent["who"] = {"identifier": {"value": client_id[:_MAX_TEXT]}}
    if address:
        agent["network"] = {"address": address[:_MAX_TEXT], "type": "2"}
    return agent


SERVER = Agent(None)


class Entity(NamedTuple):
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


@functools.lru_cache(maxsize=16)
def _source(observer: str) -> dict[str, Any]:
    return {"observer": {"display": observer}}


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
) -> dict[str, Any]:
    """An AuditEvent body (the store adds ``id`` and ``meta``)."""
    body: dict[str, Any] = {
        "resourceType": AUDIT_EVENT,
        "type": {"code": code},
        "action": action,
        "recorded": recorded,
        "outcome": outcome,
        "agent": [agent.body()],
        "source": _source(observer),
    }
    if reason:
        body["outcomeDesc"] = reason[:_MAX_TEXT]
    if entities:
        body["entity"] = [entity.body() for entity in entities]
    return body
