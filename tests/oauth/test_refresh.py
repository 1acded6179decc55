"""Refresh tokens: rotation, reuse detection revoking the Session, other clients, expiry that slides."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from fhirbox.settings import Settings
from tests.oauth.support import SECRET, bearer, client_body, form_basic, get_token, put_client
from tests.support import ROOT, MovableClock

REUSE_GRACE = Settings().refresh_reuse_grace


async def refresh(http: httpx.AsyncClient, client_id: str, token: str) -> httpx.Response:
    return await http.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": token},
        headers=form_basic(client_id, SECRET),
    )


async def session_of(http: httpx.AsyncClient) -> dict[str, Any]:
    found = (await http.get("/Session", params={"client.id": "api-client"}, auth=ROOT)).json()
    assert found["total"] == 1
    session: dict[str, Any] = found["entry"][0]["resource"]
    return session


async def test_refresh_rotates_both_tokens_in_the_same_session(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    response = await refresh(client, "api-client", refreshing["refresh_token"])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    new = response.json()
    assert new["refresh_token"] != refreshing["refresh_token"]
    assert new["expires_in"] == 3600
    assert (await session_of(client))["active"] is True
    # The Session accepts only its latest access token. (An RS256 JWT refreshed within the same second
    # has the same claims, hence is the same token, as its predecessor; ES256 signatures differ.)
    if new["access_token"] != refreshing["access_token"]:
        old = await client.get("/Patient", headers=bearer(refreshing["access_token"]))
        assert old.status_code == 401
    assert (await client.get("/Patient", headers=bearer(new["access_token"]))).status_code == 403
    again = await refresh(client, "api-client", new["refresh_token"])
    assert again.status_code == 200


async def test_refresh_works_with_json_body(client: httpx.AsyncClient, refreshing: dict[str, Any]) -> None:
    response = await client.post(
        "/auth/token",
        json={
            "grant_type": "refresh_token",
            "client_id": "api-client",
            "client_secret": SECRET,
            "refresh_token": refreshing["refresh_token"],
        },
    )
    assert response.status_code == 200


async def test_reusing_a_rotated_refresh_token_revokes_the_session(
    client: httpx.AsyncClient, refreshing: dict[str, Any], clock: MovableClock
) -> None:
    new = (await refresh(client, "api-client", refreshing["refresh_token"])).json()
    clock.advance(REUSE_GRACE + 1)
    reused = await refresh(client, "api-client", refreshing["refresh_token"])
    assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
    session = await session_of(client)
    assert session["active"] is False and "end" in session
    assert (await client.get("/Patient", headers=bearer(new["access_token"]))).status_code == 401
    latest = await refresh(client, "api-client", new["refresh_token"])
    assert latest.json()["error"] == "invalid_grant"


async def test_concurrent_refreshes_with_one_token_are_not_reuse(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    answers = await asyncio.gather(
        *(refresh(client, "api-client", refreshing["refresh_token"]) for _ in range(20))
    )
    winners = [answer for answer in answers if answer.status_code == 200]
    assert len(winners) == 1
    assert all(answer.json()["error"] == "invalid_grant" for answer in answers if answer not in winners)
    assert (await session_of(client))["active"] is True
    assert (await refresh(client, "api-client", winners[0].json()["refresh_token"])).status_code == 200


async def test_the_just_rotated_token_within_the_grace_is_refused_without_revoking(
    client: httpx.AsyncClient, refreshing: dict[str, Any], clock: MovableClock
) -> None:
    new = (await refresh(client, "api-client", refreshing["refresh_token"])).json()
    clock.advance(REUSE_GRACE - 1)
    late = await refresh(client, "api-client", refreshing["refresh_token"])
    assert late.status_code == 400
    assert late.json()["error"] == "invalid_grant"
    assert "just replaced" in late.json()["error_description"]
    assert (await session_of(client))["active"] is True
    assert (await client.get("/Patient", headers=bearer(new["access_token"]))).status_code == 403


async def test_refresh_token_of_another_client_is_invalid_grant(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    await put_client(client, "other", client_body(refresh_token=True))
    response = await refresh(client, "other", refreshing["refresh_token"])
    assert response.json()["error"] == "invalid_grant"
    assert (await session_of(client))["active"] is True


async def test_refresh_of_a_closed_session_is_invalid_grant(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    closed = await client.delete("/Session", headers=bearer(refreshing["access_token"]))
    assert closed.status_code == 200
    response = await refresh(client, "api-client", refreshing["refresh_token"])
    assert response.json()["error"] == "invalid_grant"


async def test_no_refresh_token_unless_enabled(client: httpx.AsyncClient) -> None:
    await put_client(client, "plain", client_body(token_format="jwt"))
    assert "refresh_token" not in await get_token(client, "plain")


async def test_expired_refresh_token_is_invalid_grant(client: httpx.AsyncClient, clock: MovableClock) -> None:
    await put_client(client, "api-client", client_body(refresh_token=True, refresh_token_expiration=60))
    token = await get_token(client, "api-client")
    clock.advance(61)
    response = await refresh(client, "api-client", token["refresh_token"])
    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "Refresh token expired"}


async def test_refresh_token_expiration_slides_from_last_use(
    client: httpx.AsyncClient, clock: MovableClock
) -> None:
    await put_client(client, "api-client", client_body(refresh_token=True, refresh_token_expiration=100))
    token = await get_token(client, "api-client")
    first = (await session_of(client))["refresh_token_exp"]
    clock.advance(90)
    response = await refresh(client, "api-client", token["refresh_token"])
    assert response.status_code == 200, response.text
    assert (await session_of(client))["refresh_token_exp"] >= first + 90
    clock.advance(90)  # 180 s after the first token, 90 s after the last refresh
    assert (await refresh(client, "api-client", response.json()["refresh_token"])).status_code == 200


async def test_a_refresh_grants_no_scope_the_client_has_lost_since(client: httpx.AsyncClient) -> None:
    """Root narrows a client's scope: its refresh tokens keep only what the client may still have (the
    Session and the new token alike), and a Session left with none of its scopes is invalid_grant."""
    scopes = ["system/Patient.rs", "system/Observation.cruds"]
    await put_client(client, "narrowed", {**client_body(refresh_token=True), "scope": scopes})
    policy = {"engine": "allow", "link": [{"reference": "Client/narrowed"}]}
    assert (await client.put("/AccessPolicy/narrowed", json=policy, auth=ROOT)).status_code == 201
    issued = await get_token(client, "narrowed")
    assert issued["scope"] == " ".join(scopes)
    before = await client.put(
        "/Observation/o1", json={"status": "final"}, headers=bearer(issued["access_token"])
    )
    assert before.status_code == 201
    await put_client(client, "narrowed", {**client_body(refresh_token=True), "scope": ["system/Patient.rs"]})
    response = await refresh(client, "narrowed", issued["refresh_token"])
    assert response.status_code == 200, response.text
    refreshed = response.json()
    assert refreshed["scope"] == "system/Patient.rs"
    write = await client.put(
        "/Observation/o1", json={"status": "amended"}, headers=bearer(refreshed["access_token"])
    )
    assert write.status_code == 403
    read = await client.get("/Patient", headers=bearer(refreshed["access_token"]))
    assert read.status_code == 200
    found = (await client.get("/Session", params={"client.id": "narrowed"}, auth=ROOT)).json()
    assert found["entry"][0]["resource"]["scope"] == ["system/Patient.rs"]

    await put_client(client, "narrowed", {**client_body(refresh_token=True), "scope": ["system/Device.rs"]})
    none_left = await refresh(client, "narrowed", refreshed["refresh_token"])
    assert none_left.status_code == 400
    assert none_left.json()["error"] == "invalid_grant"


async def test_a_refresh_for_an_audience_the_client_may_no_longer_use_is_invalid_grant(
    client: httpx.AsyncClient,
) -> None:
    await put_client(client, "moved", client_body(refresh_token=True, audience=["https://old.example"]))
    issued = await get_token(client, "moved", audience="https://old.example")
    await put_client(client, "moved", client_body(refresh_token=True, audience=["https://new.example"]))
    response = await refresh(client, "moved", issued["refresh_token"])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"
