"""RFC 7662 introspection at POST /auth/introspect: who may see which token, and what they see."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest

from tests.oauth.assertions import assertion, assertion_client, key_pair, token_form
from tests.oauth.support import SECRET, client_body, get_token, put_client
from tests.support import ROOT, MovableClock, basic

INACTIVE = {"active": False}
ES384 = key_pair("ES384")
RS_POLICY = {
    "engine": "matcho",
    "matcho": {"request-method": "post", "uri": "/auth/introspect"},
    "link": [{"id": "resource-server", "resourceType": "Client"}],
}


async def introspect(
    http: httpx.AsyncClient, token: str, auth: tuple[str, str] = ("api-client", SECRET), **extra: str
) -> dict[str, Any]:
    response = await http.post("/auth/introspect", data={"token": token, **extra}, auth=auth)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
async def clients(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put_client(client, "api-client", client_body(refresh_token=True))
    await put_client(client, "jwt-client", client_body(token_format="jwt", refresh_token=True))
    await put_client(client, "other-client", client_body())
    await put_client(client, "resource-server", client_body())
    return client


async def test_owner_sees_its_opaque_access_token(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client", audience="https://api.example")
    body = await introspect(clients, issued["access_token"])
    session_id = issued["access_token"].partition(".")[0]
    assert body["active"] is True
    assert body["client_id"] == body["sub"] == "api-client"
    assert body["token_type"] == "Bearer"
    assert body["iss"] == "http://testserver"
    assert body["aud"] == "https://api.example"
    assert body["jti"] == session_id
    assert body["exp"] - body["iat"] == 3600
    assert set(body) == {"active", "client_id", "sub", "exp", "iat", "iss", "aud", "jti", "token_type"}


async def test_scope_is_space_separated(client: httpx.AsyncClient) -> None:
    await put_client(client, "api-client", {**client_body(), "scope": ["read", "write"]})
    issued = await get_token(client, "api-client", scope="write read")
    assert (await introspect(client, issued["access_token"]))["scope"] == "write read"


async def test_jwt_access_token_is_described_from_its_claims(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "jwt-client")
    body = await introspect(clients, issued["access_token"], auth=("jwt-client", SECRET))
    assert body["active"] is True and body["token_type"] == "Bearer"
    assert body["jti"] and body["client_id"] == "jwt-client" and body["aud"] == "http://testserver"
    # The token's own jti (unique per issuance), not its Session's id.
    assert body["jti"] == jwt.decode(issued["access_token"], options={"verify_signature": False})["jti"]


@pytest.mark.parametrize("client_id", ["api-client", "jwt-client"])
async def test_refresh_token_is_described_as_refresh_token(
    clients: httpx.AsyncClient, client_id: str
) -> None:
    issued = await get_token(clients, client_id)
    body = await introspect(
        clients, issued["refresh_token"], auth=(client_id, SECRET), token_type_hint="access_token"
    )
    assert body["active"] is True
    assert body["token_type"] == "refresh_token"
    assert body["client_id"] == client_id


async def test_json_body_and_client_secret_post(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    response = await clients.post(
        "/auth/introspect",
        json={"token": issued["access_token"], "client_id": "api-client", "client_secret": SECRET},
    )
    assert response.status_code == 200 and response.json()["active"] is True


async def test_root_sees_any_token(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    assert (await introspect(clients, issued["access_token"], auth=ROOT))["active"] is True


async def test_other_client_sees_nothing(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    assert await introspect(clients, issued["access_token"], auth=("other-client", SECRET)) == INACTIVE
    assert await introspect(clients, issued["refresh_token"], auth=("other-client", SECRET)) == INACTIVE


async def test_resource_server_allowed_by_a_policy_sees_others_tokens(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    assert await introspect(clients, issued["access_token"], auth=("resource-server", SECRET)) == INACTIVE
    assert (await clients.put("/AccessPolicy/introspection", json=RS_POLICY, auth=ROOT)).status_code == 201
    body = await introspect(clients, issued["access_token"], auth=("resource-server", SECRET))
    assert body["active"] is True and body["client_id"] == "api-client"
    # The policy names this client only.
    assert await introspect(clients, issued["access_token"], auth=("other-client", SECRET)) == INACTIVE


async def test_client_authenticated_by_assertion_introspects(clients: httpx.AsyncClient) -> None:
    await put_client(clients, "backend", assertion_client(ES384))
    issued = await clients.post("/auth/token", data=token_form(assertion(ES384, "backend")))
    token = issued.json()["access_token"]
    form = {**token_form(assertion(ES384, "backend", aud="http://testserver")), "token": token}
    form.pop("grant_type")
    response = await clients.post("/auth/introspect", data=form)
    assert response.status_code == 200, response.text
    assert response.json()["active"] is True and response.json()["client_id"] == "backend"


@pytest.mark.parametrize(
    "token",
    ["", "nonsense", "a.b", "a.b.c", "0190c0de-0000-7000-8000-000000000000.xyz", "x" * 20_000, "é.ü"],
)
async def test_unknown_or_malformed_token_is_inactive(clients: httpx.AsyncClient, token: str) -> None:
    if token == "":
        response = await clients.post("/auth/introspect", data={"token": ""}, auth=("api-client", SECRET))
        assert response.status_code == 400 and response.json()["error"] == "invalid_request"
        return
    assert await introspect(clients, token) == INACTIVE


async def test_expired_token_is_inactive(clients: httpx.AsyncClient, clock: MovableClock) -> None:
    issued = await get_token(clients, "api-client")
    clock.advance(3601)
    assert await introspect(clients, issued["access_token"]) == INACTIVE
    assert (await introspect(clients, issued["refresh_token"]))["active"] is True


async def test_revoked_token_is_inactive(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    await clients.post("/auth/revoke", data={"token": issued["access_token"]}, auth=("api-client", SECRET))
    assert await introspect(clients, issued["access_token"]) == INACTIVE
    assert await introspect(clients, issued["refresh_token"]) == INACTIVE


async def test_refreshed_away_tokens_are_inactive(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    refreshed = await clients.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        auth=("api-client", SECRET),
    )
    assert refreshed.status_code == 200
    assert await introspect(clients, issued["access_token"]) == INACTIVE
    assert await introspect(clients, issued["refresh_token"]) == INACTIVE
    assert (await introspect(clients, refreshed.json()["access_token"]))["active"] is True


async def test_tokens_of_a_deleted_or_inactive_client_are_inactive(clients: httpx.AsyncClient) -> None:
    first = await get_token(clients, "api-client")
    await put_client(clients, "api-client", {**client_body(refresh_token=True), "active": False})
    assert await introspect(clients, first["access_token"], auth=ROOT) == INACTIVE
    await put_client(clients, "jwt-client", client_body(token_format="jwt"))
    second = await get_token(clients, "jwt-client")
    assert (await clients.delete("/Client/jwt-client", auth=ROOT)).status_code in (200, 204)
    assert await introspect(clients, second["access_token"], auth=ROOT) == INACTIVE


async def test_bad_caller_credentials_are_invalid_client(clients: httpx.AsyncClient) -> None:
    issued = await get_token(clients, "api-client")
    response = await clients.post(
        "/auth/introspect", data={"token": issued["access_token"]}, headers=basic("api-client", "wrong")
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    no_auth = await clients.post("/auth/introspect", data={"token": issued["access_token"]})
    assert no_auth.json()["error"] == "invalid_client"


async def test_missing_token_is_invalid_request(clients: httpx.AsyncClient) -> None:
    response = await clients.post("/auth/introspect", data={}, auth=("api-client", SECRET))
    assert response.status_code == 400 and response.json()["error"] == "invalid_request"
