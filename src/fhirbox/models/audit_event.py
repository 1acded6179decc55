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


SERVER = Agent(None)


class Entity(NamedTuple):
    """What an event concerns (``Session/<id>``, ``Client/<id>``…), with named details (no secrets)."""

    reference: str
    details: tuple[tuple[str, str], ...] = ()


def audit_event_json(
    event_id: str,
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
    """An AuditEvent as stored: version 1, created and last updated at ``recorded``.

    Written as text, not a dict serialised, because one is made for every token: everything events of
    one kind by one agent share is written once, into a template (``_template``), and each event
    fills in its id, its instant and its entities' references. ``event_id`` and ``recorded`` are the
    server's own id and instant, which JSON never escapes (letters, digits, ``-``, ``.``, ``:``)."""
    if len(agent.client_id or "") > _MAX_TEXT or len(agent.address or "") > _MAX_TEXT:
        # What the event keeps of them, so that the template cache holds no more (a presented id can
        # be as long as a request body).
        agent = Agent(
            agent.client_id and agent.client_id[:_MAX_TEXT], agent.address and agent.address[:_MAX_TEXT]
        )
    if reason and len(reason) > _MAX_TEXT:
        reason = reason[:_MAX_TEXT]
    if len(entities) == 1:  # the usual case, without the loops
        entity = entities[0]
        p = _template(code, action, outcome, agent, observer, reason, (entity.details,))
        reference = orjson.dumps(entity.reference).decode()
        return f"{p[0]}{event_id}{p[1]}{recorded}{p[2]}{recorded}{p[3]}{recorded}{p[4]}{reference}{p[5]}"
    parts = _template(code, action, outcome, agent, observer, reason, tuple(e.details for e in entities))
    values = (event_id, recorded, recorded, recorded, *[orjson.dumps(e.reference).decode() for e in entities])
    return "".join(part + value for part, value in zip(parts, values, strict=False)) + parts[-1]


@functools.lru_cache(maxsize=1024)
def _template(
    code: str,
    action: str,
    outcome: str,
    agent: Agent,
    observer: str,
    reason: str | None,
    details: tuple[tuple[tuple[str, str], ...], ...],
) -> tuple[str, ...]:
    """The JSON of an event in parts, between which go its id, its instant (three times) and each
    entity's reference (as a JSON string)."""

    def text(value: Any) -> str:
        return orjson.dumps(value).decode()

    members = [
        f'"type":{text({"code": code})},"action":{text(action)},"outcome":{text(outcome)}',
        f'"agent":[{text(agent.body())}],"source":{text({"observer": {"display": observer}})}',
    ]
    if reason:
        members.append('"outcomeDesc":' + text(reason))  # cut to _MAX_TEXT by audit_event_json
    if details:
        items = []
        for named in details:
            detail = [{"type": name, "valueString": value[:_MAX_TEXT]} for name, value in named]
            described = f',"detail":{text(detail)}' if detail else ""
            items.append(f'{{"what":{{"reference":{_SLOT}}}{described}}}')
        members.append('"entity":[' + ",".join(items) + "]")
    head = (
        f'{{"resourceType":"{AUDIT_EVENT}","id":"{_SLOT}","meta":{{"versionId":"1",'
        f'"lastUpdated":"{_SLOT}","createdAt":"{_SLOT}"}},"recorded":"{_SLOT}",'
    )
    return tuple((head + ",".join(members) + "}").split(_SLOT))


# Where a value goes in a template: a character orjson never writes unescaped.
_SLOT = "\x00"
