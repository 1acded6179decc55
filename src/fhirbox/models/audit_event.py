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

import orjson

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
        """The ``agent`` item."""
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


@functools.lru_cache(maxsize=256)
def _agent_json(agent: Agent) -> str:
    return orjson.dumps(agent.body()).decode()


SERVER = Agent(None)


class Entity(NamedTuple):
    """What an event concerns (``Session/<id>``, ``Client/<id>``…), with named details (no secrets)."""

    reference: str
    details: tuple[tuple[str, str], ...] = ()

    def json(self) -> str:
        """The ``entity`` item as JSON (the details of a kind of event repeat: written once)."""
        reference = orjson.dumps(self.reference).decode()
        if not self.details:
            return f'{{"what":{{"reference":{reference}}}}}'
        return f'{{"what":{{"reference":{reference}}},"detail":{_details_json(self.details)}}}'


@functools.lru_cache(maxsize=256)
def _details_json(details: tuple[tuple[str, str], ...]) -> str:
    items = [{"type": name, "valueString": value[:_MAX_TEXT]} for name, value in details]
    return orjson.dumps(items).decode()


@functools.lru_cache(maxsize=16)
def _source_json(observer: str) -> str:
    return orjson.dumps({"observer": {"display": observer}}).decode()


def audit_event_members(
    *,
    code: str,
    action: str,
    outcome: str,
    recorded: str,
    agent: Agent,
    observer: str,
    entities: tuple[Entity, ...] = (),
    reason: str | None = None,
) -> str:
    """An AuditEvent's JSON members but ``resourceType``, ``id`` and ``meta`` (the store writes those):
    ``"type":{...},"action":"C",...``. Written as text, not a dict serialised, because one is made for
    every token: the agent, source and details of an event repeat, and are serialised once each.
    ``code``, ``action``, ``outcome`` and ``recorded`` are the server's own constants and instant."""
    members = (
        f'"type":{{"code":"{code}"}},"action":"{action}","recorded":"{recorded}",'
        f'"outcome":"{outcome}","agent":[{_agent_json(agent)}],"source":{_source_json(observer)}'
    )
    if reason:
        members += ',"outcomeDesc":' + orjson.dumps(reason[:_MAX_TEXT]).decode()
    if entities:
        members += ',"entity":[' + ",".join(entity.json() for entity in entities) + "]"
    return members
