"""Discovery documents, and the Client settings checks (422 naming the field)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.oauth.support import SECRET, client_body
from tests.support import ROOT

DISCOVERY = ["/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"]


@pytest.mark.parametrize("path", DISCOVERY)
async def test_discovery_documents_point_at_the_endpoints(client: httpx.AsyncClient, path: str) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    doc = response.json()
    base = "http://testserver"
    assert doc["issuer"] == base
    assert doc["token_endpoint"] == f"{base}/auth/token"
    assert doc["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert doc["revocation_endpoint"] == f"{base}/auth/revoke"
    assert set(doc["grant_types_supported"]) == {"client_credentials", "refresh_token"}
    assert set(doc["token_endpoint_auth_methods_supported"]) == {"client_secret_basic", "client_secret_post"}


@pytest.mark.product_signing_alg
async def test_jwks_publishes_public_keys_only(client: httpx.AsyncClient) -> None:
    keys = (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert len(keys) == 1
    [key] = keys
    assert key["kid"] and key["use"] == "sig" and key["alg"] == "RS256"  # the product's default
    assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


async def test_signing_keys_are_not_reachable_through_rest(client: httpx.AsyncClient) -> None:
    assert (await client.get("/SigningKey", auth=ROOT)).status_code == 404


@pytest.mark.parametrize(
    ("auth", "field"),
    [
        ({"token_format": "paseto"}, "auth.client_credentials.token_format"),
        ({"access_token_expiration": 0}, "auth.client_credentials.access_token_expiration"),
        ({"access_token_expiration": -5}, "auth.client_credentials.access_token_expiration"),
        ({"access_token_expiration": 1.5}, "auth.client_credentials.access_token_expiration"),
        ({"access_token_expiration": "600"}, "auth.client_credentials.access_token_expiration"),
        ({"token_expiration": True}, "auth.client_credentials.token_expiration"),
        ({"refresh_token_expiration": 0}, "auth.client_credentials.refresh_token_expiration"),
        ({"refresh_token": "yes"}, "auth.client_credentials.refresh_token"),
        ({"audience": "https://x"}, "auth.client_credentials.audience"),
        ({"audience": ["#("]}, "auth.client_credentials.audience"),
    ],
)
async def test_invalid_client_settings_are_422_naming_the_field(
    client: httpx.AsyncClient, auth: dict[str, Any], field: str
) -> None:
    body = {"secret": SECRET, "grant_types": ["client_credentials"], "auth": {"client_credentials": auth}}
    response = await client.put("/Client/bad", json=body, auth=ROOT)
    assert response.status_code == 422
    assert field in response.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("regex", ["#(a)\\1", "#(?=a)a", "#\\bx"])
async def test_audience_regex_re2_cannot_run_is_422_naming_it(client: httpx.AsyncClient, regex: str) -> None:
    response = await client.put("/Client/bad", json=client_body(audience=["urn:ok", regex]), auth=ROOT)
    assert response.status_code == 422, response.text
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "auth.client_credentials.audience" in diagnostics and repr(regex) in diagnostics
    assert (await client.get("/Client/bad", auth=ROOT)).status_code == 404


async def test_unknown_grant_type_is_422(client: httpx.AsyncClient) -> None:
    body = {"secret": SECRET, "grant_types": ["client_credentials", "magic"]}
    response = await client.put("/Client/bad", json=body, auth=ROOT)
    assert response.status_code == 422
    assert "grant_types" in response.json()["issue"][0]["diagnostics"]
