"""Discovery documents, and the Client settings checks (422 naming the field)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirbox.settings import Settings
from tests.oauth.support import SECRET, client_body
from tests.support import ROOT, started_app

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
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
    }
    assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert doc["introspection_endpoint"] == f"{base}/auth/introspect"


@pytest.mark.parametrize("path", DISCOVERY)
async def test_metadata_advertises_no_flow_it_does_not_serve(client: httpx.AsyncClient, path: str) -> None:
    """RFC 8414: no authorization endpoint, so no response type; no ID tokens, so no OIDC fields."""
    doc = (await client.get(path)).json()
    assert doc["response_types_supported"] == []
    assert "authorization_endpoint" not in doc
    assert not [name for name in doc if name.startswith(("id_token", "subject_types", "userinfo"))]


SMART_FIELDS = {
    "issuer",
    "jwks_uri",
    "token_endpoint",
    "token_endpoint_auth_methods_supported",
    "token_endpoint_auth_signing_alg_values_supported",
    "grant_types_supported",
    "scopes_supported",
    "response_types_supported",
    "capabilities",
    "code_challenge_methods_supported",
    "introspection_endpoint",
    "revocation_endpoint",
}


@pytest.mark.parametrize("accept", [None, "application/fhir+json", "text/yaml", "application/xml", "*/*"])
async def test_smart_configuration_is_json_whatever_the_accept_header(
    client: httpx.AsyncClient, accept: str | None
) -> None:
    headers = {"Accept": accept} if accept else {}
    response = await client.get("/.well-known/smart-configuration", headers=headers)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    doc = response.json()
    assert set(doc) == SMART_FIELDS
    base = "http://testserver"
    assert doc["issuer"] == base and doc["jwks_uri"] == f"{base}/.well-known/jwks.json"
    assert doc["token_endpoint"] == f"{base}/auth/token"
    assert doc["introspection_endpoint"] == f"{base}/auth/introspect"
    assert doc["revocation_endpoint"] == f"{base}/auth/revoke"
    assert set(doc["token_endpoint_auth_methods_supported"]) == {
        "private_key_jwt",
        "client_secret_basic",
        "client_secret_post",
    }
    assert {"RS384", "ES384"} <= set(doc["token_endpoint_auth_signing_alg_values_supported"])
    assert not {"none", "HS256", "HS384", "HS512"} & set(
        doc["token_endpoint_auth_signing_alg_values_supported"]
    )
    assert set(doc["grant_types_supported"]) == {"client_credentials", "refresh_token"}
    assert set(doc["capabilities"]) == {
        "client-confidential-asymmetric",
        "client-confidential-symmetric",
        "permission-v1",
        "permission-v2",
    }
    assert doc["code_challenge_methods_supported"] == ["S256"]
    assert doc["response_types_supported"] == []
    assert "system/*.read" in doc["scopes_supported"] and "system/*.cruds" in doc["scopes_supported"]


async def test_smart_configuration_needs_no_credentials_and_ignores_bad_ones(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/.well-known/smart-configuration", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 200


async def test_an_issuer_with_a_path_has_its_metadata_at_the_rfc_8414_location(
    settings: Settings,
) -> None:
    """RFC 8414 §3: issuer http://h/fhir -> /.well-known/oauth-authorization-server/fhir."""
    async with started_app(settings, base_url="http://h/fhir") as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://h") as http:
            response = await http.get("/.well-known/oauth-authorization-server/fhir")
            assert response.status_code == 200
            assert response.json()["issuer"] == "http://h/fhir"
            assert response.json()["token_endpoint"] == "http://h/fhir/auth/token"
            assert (await http.get("/.well-known/oauth-authorization-server")).json()[
                "issuer"
            ] == "http://h/fhir"
            smart = await http.get("/.well-known/smart-configuration")
            assert smart.json()["issuer"] == "http://h/fhir"
            assert (await http.get("/.well-known/oauth-authorization-server/other")).status_code == 404


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
