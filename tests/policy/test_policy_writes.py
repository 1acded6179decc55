"""AccessPolicies that cannot be enforced are refused at write time with a 422 naming the problem."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

BAD_POLICIES = [
    ("unknown engine", {"engine": "sql", "sql": {"query": "select true"}}, "engine: unknown engine 'sql'"),
    ("missing engine", {"matcho": {"uri": "/Patient"}}, "engine: required"),
    ("invalid regex", {"engine": "matcho", "matcho": {"uri": "#/Patient/(["}}, "matcho.uri: invalid regular"),
    ("unknown operator", {"engine": "matcho", "matcho": {"uri": {"$like": "x"}}}, "unknown matcho operator"),
    ("matcho not an object", {"engine": "matcho", "matcho": ["get"]}, "matcho: must be an object"),
    ("invalid schema", {"engine": "json-schema", "schema": {"type": 12}}, "schema: invalid JSON Schema"),
    ("schema missing", {"engine": "json-schema"}, "schema: must be a JSON Schema object"),
    (
        "and with or",
        {"engine": "complex", "and": [{"engine": "allow"}], "or": [{"engine": "allow"}]},
        "never both on one level",
    ),
    ("link not an array", {"engine": "allow", "link": "Client/x"}, "link: must be an array"),
    ("link item without id", {"engine": "allow", "link": [{"resourceType": "Client"}]}, "link[0]: must be"),
]


@pytest.mark.parametrize(
    ("policy", "problem"), [(p, m) for _, p, m in BAD_POLICIES], ids=[b[0] for b in BAD_POLICIES]
)
async def test_bad_policy_is_rejected_at_write(
    root: httpx.AsyncClient, policy: dict[str, Any], problem: str
) -> None:
    response = await root.put("/AccessPolicy/bad", json=policy)
    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert problem in outcome["issue"][0]["diagnostics"]
    assert (await root.get("/AccessPolicy/bad")).status_code == 404


async def test_bad_policy_is_rejected_on_create_and_patch(root: httpx.AsyncClient) -> None:
    bad = {"engine": "matcho", "matcho": {"uri": "#("}}
    assert (await root.post("/AccessPolicy", json=bad)).status_code == 422
    assert (await root.put("/AccessPolicy/good", json={"engine": "allow"})).status_code == 201
    patched = await root.patch(
        "/AccessPolicy/good",
        json={"engine": "json-schema", "schema": {"required": "uri"}},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 422
    assert (await root.get("/AccessPolicy/good")).json()["engine"] == "allow"
