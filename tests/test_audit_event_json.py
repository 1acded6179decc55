"""An AuditEvent is written as JSON text, not a serialised dict: it must be valid JSON of the right
shape whatever the texts it carries (a presented client id, an address, a reason are the caller's)."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fhirbox.models.audit_event import Agent, Entity, audit_event_members
from fhirbox.storage.base import appended_json

RECORDED = "2026-11-30T10:32:22.543245Z"
TEXT = st.text(max_size=300)


@given(
    client_id=st.none() | TEXT,
    address=st.none() | TEXT,
    reference=TEXT,
    details=st.lists(st.tuples(TEXT, TEXT), max_size=4),
    reason=st.none() | TEXT,
    observer=TEXT,
)
def test_an_audit_event_is_json_of_its_shape_whatever_its_texts_hold(
    client_id: str | None,
    address: str | None,
    reference: str,
    details: list[tuple[str, str]],
    reason: str | None,
    observer: str,
) -> None:
    agent, entity = Agent(client_id, address), Entity(reference, tuple(details))
    members = audit_event_members(
        code="client-auth-failed",
        action="E",
        outcome="4",
        recorded=RECORDED,
        agent=agent,
        observer=observer,
        entities=(entity,),
        reason=reason,
    )
    row = appended_json("AuditEvent", "0123abcd-0000000001", RECORDED, members)
    body = orjson.loads(row.text)
    expected_entity: dict[str, object] = {"what": {"reference": reference}}
    if details:
        expected_entity["detail"] = [{"type": name, "valueString": value[:200]} for name, value in details]
    assert body == {
        "resourceType": "AuditEvent",
        "id": "0123abcd-0000000001",
        "meta": {"versionId": "1", "lastUpdated": RECORDED, "createdAt": RECORDED},
        "type": {"code": "client-auth-failed"},
        "action": "E",
        "recorded": RECORDED,
        "outcome": "4",
        "agent": [agent.body()],
        "source": {"observer": {"display": observer}},
        "entity": [expected_entity],
        **({"outcomeDesc": reason[:200]} if reason else {}),
    }
    assert (row.type, row.id, row.version, row.op, row.updated) == (
        "AuditEvent",
        row.id,
        1,
        "create",
        RECORDED,
    )
