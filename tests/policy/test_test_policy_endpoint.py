"""POST /auth/test-policy: root evaluates a policy against a request object it gives."""

from __future__ import annotations

import httpx
import jwt

from tests.policy.conftest import FORBIDDEN, ClientMaker

READ_PATIENTS = {
    "engine": "matcho",
    "matcho": {"request-method": "get", "params": {"resource/type": "Patient"}},
}


async def test_root_sees_a_passing_policy(root: httpx.AsyncClient) -> None:
    response = await root.post(
        "/auth/test-policy",
        json={
            "request": {"request-method": "GET", "params": {"resource/type": "Patient"}},
            "policy": READ_PATIENTS,
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"eval-result": True, "engine": "matcho"}


async def test_root_sees_which_part_failed(root: httpx.AsyncClient) -> None:
    response = await root.post(
        "/auth/test-policy",
        json={
            "request": {"request-method": "get", "params": {"resource/type": "Encounter"}},
            "policy": READ_PATIENTS,
        },
    )
    assert response.json()["result"] == {
        "eval-result": False,
        "engine": "matcho",
        "failed-at": "params.resource/type",
    }


async def test_complex_result_names_the_deciding_rule(root: httpx.AsyncClient) -> None:
    policy = {
        "engine": "complex",
        "and": [READ_PATIENTS, {"engine": "matcho", "matcho": {"client": {"id": "x"}}}],
    }
    request = {"request-method": "get", "params": {"resource/type": "Patient"}}
    result = (await root.post("/auth/test-policy", json={"request": request, "policy": policy})).json()[
        "result"
    ]
    assert result["eval-result"] is False
    assert result["decided-by"] == "and[1]"


async def test_client_id_and_bearer_jwt_fill_in_the_request(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    await api_client("lab", details={"team": "lab"})
    token = jwt.encode(
        {"sub": "lab", "team": "lab"}, "any-key-since-the-claims-are-not-verified", algorithm="HS256"
    )
    policy = {"engine": "matcho", "matcho": {"client": {"secret": "nil?", "details": {"team": ".jwt.team"}}}}
    request = {"client-id": "lab", "headers": {"authorization": f"Bearer {token}"}}
    response = await root.post("/auth/test-policy", json={"request": request, "policy": policy})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"]["eval-result"] is True
    assert body["request"]["jwt"]["team"] == "lab"
    assert "authorization" not in body["request"]["headers"]


async def test_stored_policy_can_be_tested_by_id_and_nothing_changes(root: httpx.AsyncClient) -> None:
    await root.put("/AccessPolicy/readers", json=READ_PATIENTS)
    before = (await root.get("/AccessPolicy/readers/_history")).json()["total"]
    request = {"request-method": "delete", "params": {"resource/type": "Patient"}}
    response = await root.post("/auth/test-policy", json={"request": request, "policy": {"id": "readers"}})
    assert response.json()["result"]["eval-result"] is False
    assert (await root.get("/AccessPolicy/readers/_history")).json()["total"] == before


async def test_bad_input_is_answered_with_422(root: httpx.AsyncClient) -> None:
    cases = [
        [1, 2],
        {"policy": READ_PATIENTS},
        {"request": {}},
        {"request": {}, "policy": {"engine": "matcho", "matcho": {"uri": "#("}}},
        {"request": {}, "policy": {"id": "no-such-policy"}},
        {"request": {"client-id": "no-such-client"}, "policy": READ_PATIENTS},
    ]
    for body in cases:
        response = await root.post("/auth/test-policy", json=body)
        assert response.status_code == 422, (body, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    invalid = await root.post("/auth/test-policy", content=b"{", headers={"Content-Type": "application/json"})
    assert invalid.status_code == 400


async def test_only_root_may_test_policies(
    client: httpx.AsyncClient, root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    body = {"request": {}, "policy": {"engine": "allow"}}
    assert (await client.post("/auth/test-policy", json=body)).status_code == 401
    admin = await api_client("admin")
    assert (await admin.post("/auth/test-policy", json=body)).status_code == 403
    await root.put("/AccessPolicy/admin", json={"engine": "allow", "link": [{"reference": "Client/admin"}]})
    response = await admin.post("/auth/test-policy", json=body)
    assert response.status_code == 403
    assert response.json() == FORBIDDEN


async def test_a_bearer_jwt_whose_claims_json_cannot_carry_is_no_jwt_not_a_500(
    root: httpx.AsyncClient,
) -> None:
    """The unverified claims are echoed back as JSON: an integer past 64 bits or a payload nested past
    what a parser recurses into leaves the request without ``jwt`` instead of failing it."""
    import base64

    def unsigned(payload: str) -> str:
        part = base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode()
        return f"eyJhbGciOiJIUzI1NiJ9.{part}.c2ln"

    policy = {"engine": "matcho", "matcho": {"request-method": "get"}}
    for payload in ('{"n": ' + "9" * 30 + "}", '{"n": ' + "[" * 100_000 + "]" * 100_000 + "}"):
        request = {"request-method": "get", "headers": {"authorization": f"Bearer {unsigned(payload)}"}}
        response = await root.post("/auth/test-policy", json={"request": request, "policy": policy})
        assert response.status_code == 200, response.text
        assert "jwt" not in response.json()["request"]
