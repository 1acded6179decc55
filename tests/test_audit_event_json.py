"""An AuditEvent is written as JSON text, not a serialised dict: it must be valid JSON of the right
shape whatever the texts it carries (a presented client id, an address, a reason are the caller's)."""

from __future__ import annotations

import tracemalloc
from typing import cast

import orjson
from hypothesis import given
from hypothesis import strategies as st

from fhirbox.audit import Audit
from fhirbox.models.audit_event import Agent, Entity, audit_event_json
from fhirbox.storage.base import Store

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
    text = audit_event_json(
        "0123abcd-0000000001",
        code="client-auth-failed",
        action="E",
        outcome="4",
        recorded=RECORDED,
        agent=agent,
        observer=observer,
        entities=(entity,),
        reason=reason,
    )
    body = orjson.loads(text)
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


def test_an_event_is_stored_under_its_id_and_recorded_instant() -> None:
    audit = Audit(cast(Store, None), "all", 60, lambda: 1_796_000_000.25, "http://observer")
    row = audit.event("token-issued", action="C", agent=Agent("c1", "10.0.0.1"))
    assert row is not None
    body = orjson.loads(row.text)
    assert (row.type, row.version, row.op) == ("AuditEvent", 1, "create")
    assert row.id == body["id"]
    assert row.updated == body["recorded"] == body["meta"]["lastUpdated"] == "2026-11-30T00:53:20.250000Z"


def test_what_the_event_cache_keeps_of_a_presented_id_is_bounded() -> None:
    """A failed authentication records the id the caller presented, which can be as long as a body:
    the event keeps 200 characters of it, and so does the template cache (no megabytes held)."""
    tracemalloc.start()
    try:
        for n in range(40):
            audit_event_json(
                f"e{n}",
                code="client-auth-failed",
                action="E",
                outcome="4",
                recorded=RECORDED,
                agent=Agent(f"{n}-" + "x" * 100_000, "10.0.0.1" + "9" * 100_000),
                observer="http://observer",
                reason="r" * 100_000,
            )
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert held < 1_000_000  # 40 ids, addresses and reasons of 100,000 characters: 12 MB unbounded
