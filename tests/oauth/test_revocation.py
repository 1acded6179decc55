"""Closing Sessions takes effect at once: DELETE /Session, RFC 7009 /auth/revoke, across processes."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest

from tests.oauth.support import SECRET, bearer, client_body, form_basic, put_client
from tests.support import FRESHNESS_BOUND, ROOT, ServerProcess, wait_until


async def test_delete_session_closes_it_and_the_token_fails_at_once(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    access = refreshing["access_token"]
    assert (await client.get("/Patient", headers=bearer(access))).status_code == 403
    response = await client.delete("/Session", headers=bearer(access))
    assert response.status_code == 200
    session = response.json()
    assert session["active"] is False and session["end"] and session["client"]["id"] == "api-client"
    assert "access_token" not in session and "refresh_token" not in session
    after = await client.get("/Patient", headers=bearer(access))
    assert after.status_code == 401
    assert 'error="invalid_token"' in after.headers["www-authenticate"]
    assert (await client.delete("/Session", headers=bearer(access))).status_code == 401


async def test_delete_session_needs_a_bearer_token(client: httpx.AsyncClient) -> None:
    assert (await client.delete("/Session")).status_code == 401
    assert (await client.delete("/Session", auth=ROOT)).status_code == 400
    assert (await client.get("/Session", auth=ROOT)).status_code == 200


@pytest.mark.parametrize("which", ["access_token", "refresh_token"])
async def test_revoke_endpoint_revokes_access_or_refresh_token(
    client: httpx.AsyncClient, refreshing: dict[str, Any], which: str
) -> None:
    response = await client.post(
        "/auth/revoke", data={"token": refreshing[which]}, headers=form_basic("api-client", SECRET)
    )
    assert response.status_code == 200
    assert (await client.get("/Patient", headers=bearer(refreshing["access_token"]))).status_code == 401
    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refreshing["refresh_token"]},
        headers=form_basic("api-client", SECRET),
    )
    assert refreshed.json()["error"] == "invalid_grant"


async def test_revoke_by_another_client_is_refused_and_changes_nothing(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    await put_client(client, "other", client_body())
    response = await client.post(
        "/auth/revoke", data={"token": refreshing["access_token"]}, headers=form_basic("other", SECRET)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "unauthorized_client"
    assert response.headers["cache-control"] == "no-store"
    # still a valid token: authenticated (no policy grants it anything, so 403, not 401)
    assert (await client.get("/Patient", headers=bearer(refreshing["access_token"]))).status_code == 403


async def test_revoke_answers_200_for_unknown_tokens_and_errors_for_bad_requests(
    client: httpx.AsyncClient, refreshing: dict[str, Any]
) -> None:
    ok = await client.post("/auth/revoke", data={"token": "x.y"}, headers=form_basic("api-client", SECRET))
    assert ok.status_code == 200
    missing = await client.post("/auth/revoke", data={}, headers=form_basic("api-client", SECRET))
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    wrong = await client.post("/auth/revoke", data={"token": "x"}, headers=form_basic("api-client", "no"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


@pytest.mark.parametrize("token_format", ["jwt", "opaque"])
def test_revocation_is_seen_by_another_server_process_within_a_second(
    server_factory: Callable[..., ServerProcess], token_format: str
) -> None:
    # Processes behind one public URL share it as the tokens' issuer.
    shared = {"FHIRBOX_BASE_URL": "http://fhirbox.test"}
    first, second = server_factory(env=shared), server_factory(env=shared)
    settings = {"auth": {"client_credentials": {"token_format": "jwt"}}} if token_format == "jwt" else {}
    with first.client() as one, second.client() as two:
        assert one.put("/Client/api-client", json={**client_body(), **settings}, auth=ROOT).status_code == 201
        access = one.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("api-client", SECRET)
        ).json()["access_token"]
        # Both processes have the Session cached as valid.
        wait_until(lambda: two.get("/Patient", headers=bearer(access)).status_code == 403)
        assert one.get("/Patient", headers=bearer(access)).status_code == 403
        assert one.request("DELETE", "/Session", headers=bearer(access)).status_code == 200
        wait_until(lambda: two.get("/Patient", headers=bearer(access)).status_code == 401, FRESHNESS_BOUND)
