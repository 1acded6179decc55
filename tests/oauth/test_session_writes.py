"""Sessions are server-managed: only the token endpoint creates or changes them; DELETE closes one."""

from __future__ import annotations

import hashlib

import httpx
import pytest

from tests.oauth.support import bearer, client_body, get_token, put_client

CHOSEN_TOKEN = "attacker-session.chosen-secret"
FORGED = {
    "resourceType": "Session",
    "client": {"id": "root", "resourceType": "Client"},
    "active": True,
    "exp": 4_000_000_000,
    "access_token": hashlib.sha256(CHOSEN_TOKEN.encode()).hexdigest(),
}


def assert_405(response: httpx.Response) -> None:
    assert response.status_code == 405, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "managed by the server" in body["issue"][0]["diagnostics"]
    assert response.headers["allow"] == "GET, DELETE"


async def test_a_client_allowed_to_write_sessions_cannot_forge_a_root_session(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    writer = ("session-writer", "writer-secret")
    await put_client(root, writer[0], {"secret": writer[1], "grant_types": ["basic"]})
    policy = {"engine": "allow", "link": [{"reference": "Client/session-writer"}]}
    assert (await root.put("/AccessPolicy/writer-may-do-anything", json=policy)).status_code == 201

    assert_405(await client.put("/Session/attacker-session", json=FORGED, auth=writer))
    assert_405(await client.post("/Session", json={**FORGED, "id": "attacker-session"}, auth=writer))
    forged = await client.get("/Patient", headers=bearer(CHOSEN_TOKEN))
    assert forged.status_code == 401
    assert (await root.get("/Session/attacker-session")).status_code == 404


@pytest.mark.parametrize("method", ["PUT", "POST", "PATCH"])
async def test_even_root_cannot_write_a_session(
    root: httpx.AsyncClient, client: httpx.AsyncClient, method: str
) -> None:
    await put_client(root, "api-client", client_body())
    await get_token(client, "api-client")
    [session] = [e["resource"] for e in (await root.get("/Session")).json()["entry"]]
    url = "/Session" if method == "POST" else f"/Session/{session['id']}"
    content_type = "application/merge-patch+json" if method == "PATCH" else "application/json"
    response = await root.request(
        method, url, json={"active": True, "end": None}, headers={"Content-Type": content_type}
    )
    assert_405(response)
    assert (await root.get(f"/Session/{session['id']}")).json()["active"] is True


async def test_delete_session_by_id_closes_it_and_stops_its_token(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await put_client(root, "api-client", client_body(token_format="jwt", refresh_token=True))
    token = await get_token(client, "api-client")
    [session] = [e["resource"] for e in (await root.get("/Session")).json()["entry"]]
    assert (await client.get("/Patient", headers=bearer(token["access_token"]))).status_code == 403

    closed = await root.delete(f"/Session/{session['id']}")
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert body["id"] == session["id"] and body["active"] is False and "end" in body
    assert not {"access_token", "refresh_token"} & set(body)
    rejected = await client.get("/Patient", headers=bearer(token["access_token"]))
    assert rejected.status_code == 401
    assert "closed" in rejected.headers["www-authenticate"]
    stored = (await root.get(f"/Session/{session['id']}")).json()
    assert stored["active"] is False and not {"access_token", "refresh_token"} & set(stored)
    # Closing again changes nothing; an unknown id is 404.
    assert (await root.delete(f"/Session/{session['id']}")).json()["end"] == body["end"]
    assert (await root.delete("/Session/no-such-session")).status_code == 404
