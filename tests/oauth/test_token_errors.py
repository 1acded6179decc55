"""Every RFC 6749 §5.2 / RFC 8707 error of POST /auth/token: status, headers and JSON body."""

from __future__ import annotations

import base64
import json

import httpx
import pytest

from tests.oauth.support import SECRET, client_body, form_basic, put_client
from tests.support import ROOT


def assert_oauth_error(response: httpx.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == error
    assert isinstance(body["error_description"], str) and body["error_description"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")


@pytest.fixture
async def api(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put_client(client, "api-client", client_body())
    return client


async def test_missing_grant_type_is_invalid_request(api: httpx.AsyncClient) -> None:
    response = await api.post("/auth/token", data={}, headers=form_basic("api-client", SECRET))
    assert_oauth_error(response, "invalid_request")


async def test_repeated_parameter_is_invalid_request(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token",
        content="grant_type=client_credentials&grant_type=client_credentials",
        headers={"Content-Type": "application/x-www-form-urlencoded", **form_basic("api-client", SECRET)},
    )
    assert_oauth_error(response, "invalid_request")


async def test_wrong_content_type_is_invalid_request(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token",
        content="grant_type: client_credentials",
        headers={"Content-Type": "text/yaml", **form_basic("api-client", SECRET)},
    )
    assert_oauth_error(response, "invalid_request")


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"grant_type": 5}'])
async def test_malformed_json_is_invalid_request(api: httpx.AsyncClient, body: bytes) -> None:
    response = await api.post("/auth/token", content=body, headers={"Content-Type": "application/json"})
    assert_oauth_error(response, "invalid_request")


async def test_two_client_authentication_methods_are_invalid_request(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "api-client", "client_secret": SECRET},
        headers=form_basic("api-client", SECRET),
    )
    assert_oauth_error(response, "invalid_request")


@pytest.mark.parametrize(
    ("client_id", "secret"), [("api-client", "wrong"), ("nobody", SECRET), ("inactive", SECRET)]
)
async def test_unknown_wrong_or_inactive_client_get_one_answer_over_basic(
    api: httpx.AsyncClient, client_id: str, secret: str
) -> None:
    await put_client(api, "inactive", {**client_body(), "active": False})
    response = await api.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=form_basic(client_id, secret)
    )
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["www-authenticate"] == 'Basic realm="fhirbox"'
    assert response.json()["error_description"] == "Client authentication failed"


@pytest.mark.parametrize(
    ("client_id", "secret"), [("api-client", "wrong"), ("nobody", SECRET), ("inactive", SECRET)]
)
async def test_unknown_wrong_or_inactive_client_in_body_get_400_invalid_client(
    api: httpx.AsyncClient, client_id: str, secret: str
) -> None:
    await put_client(api, "inactive", {**client_body(), "active": False})
    response = await api.post(
        "/auth/token",
        json={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert_oauth_error(response, "invalid_client", 400)
    assert "www-authenticate" not in response.headers
    assert response.json()["error_description"] == "Client authentication failed"


async def test_no_client_authentication_is_invalid_client(api: httpx.AsyncClient) -> None:
    response = await api.post("/auth/token", data={"grant_type": "client_credentials"})
    assert_oauth_error(response, "invalid_client", 400)


async def test_malformed_basic_header_is_invalid_client_with_challenge(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": "Basic !!!"}
    )
    assert_oauth_error(response, "invalid_client", 401)
    assert response.headers["www-authenticate"] == 'Basic realm="fhirbox"'


async def test_basic_credentials_are_form_url_decoded(client: httpx.AsyncClient) -> None:
    await put_client(client, "odd.id", {**client_body(), "secret": "p@ss:word +%"})
    response = await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=form_basic("odd.id", "p@ss:word +%")
    )
    assert response.status_code == 200, response.text


async def test_client_without_the_grant_type_is_unauthorized_client(client: httpx.AsyncClient) -> None:
    await put_client(client, "basic-only", {"secret": SECRET, "grant_types": ["basic"]})
    response = await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=form_basic("basic-only", SECRET)
    )
    assert_oauth_error(response, "unauthorized_client")


async def test_unknown_grant_type_is_unsupported_grant_type(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token", data={"grant_type": "password"}, headers=form_basic("api-client", SECRET)
    )
    assert_oauth_error(response, "unsupported_grant_type")


async def test_bad_refresh_token_is_invalid_grant(client: httpx.AsyncClient) -> None:
    await put_client(client, "api-client", client_body(refresh_token=True))
    response = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": "nope.nope"},
        headers=form_basic("api-client", SECRET),
    )
    assert_oauth_error(response, "invalid_grant")


async def test_scope_beyond_the_clients_list_is_invalid_scope(client: httpx.AsyncClient) -> None:
    await put_client(client, "scoped", {**client_body(), "scope": ["system/Patient.read"]})
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.read system/Patient.write"},
        headers=form_basic("scoped", SECRET),
    )
    assert_oauth_error(response, "invalid_scope")


async def test_audience_outside_the_allow_list_is_invalid_target(client: httpx.AsyncClient) -> None:
    await put_client(client, "aud", client_body(token_format="jwt", audience=["https://a.example"]))
    for name in ("audience", "resource"):
        response = await client.post(
            "/auth/token",
            data={"grant_type": "client_credentials", name: "https://b.example"},
            headers=form_basic("aud", SECRET),
        )
        assert_oauth_error(response, "invalid_target")


async def test_resource_that_is_not_an_absolute_uri_is_invalid_target(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "resource": "not-a-uri"},
        headers=form_basic("api-client", SECRET),
    )
    assert_oauth_error(response, "invalid_target")


async def test_oversized_body_is_invalid_request_not_500(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/auth/token",
        content=b"grant_type=" + b"x" * (2 * 1024 * 1024),
        headers={"Content-Type": "application/x-www-form-urlencoded", **form_basic("api-client", SECRET)},
    )
    assert_oauth_error(response, "invalid_request")


async def test_token_endpoint_ignores_the_api_basic_scheme(api: httpx.AsyncClient) -> None:
    # Root's Basic credentials authenticate root as an OAuth client here, nothing more.
    raw = base64.b64encode(f"{ROOT[0]}:{ROOT[1]}".encode()).decode()
    response = await api.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers={"Authorization": f"Basic {raw}"}
    )
    assert response.status_code == 200


async def test_repeated_json_key_is_invalid_request(api: httpx.AsyncClient) -> None:
    body = '{"grant_type": "client_credentials", "client_id": "api-client", "client_id": "root", '
    body += f'"client_secret": "{SECRET}"}}'
    response = await api.post("/auth/token", content=body, headers={"Content-Type": "application/json"})
    assert_oauth_error(response, "invalid_request")
    assert "client_id" in response.json()["error_description"]


@pytest.mark.parametrize("field", ["audience", "scope", "grant_type", "x\x00"])
async def test_nul_in_any_parameter_is_invalid_request(api: httpx.AsyncClient, field: str) -> None:
    data = {"grant_type": "client_credentials", field: "a\x00b" if "\x00" not in field else "x"}
    response = await api.post("/auth/token", data=data, headers=form_basic("api-client", SECRET))
    assert_oauth_error(response, "invalid_request")
    sessions = await api.get("/Session", auth=ROOT)
    assert sessions.json()["total"] == 0


async def test_error_description_echoes_client_input_only_as_printable_ascii(api: httpx.AsyncClient) -> None:
    data = {"grant_type": 'weird-"grant"-ü\\'}
    response = await api.post("/auth/token", data=data, headers=form_basic("api-client", SECRET))
    assert_oauth_error(response, "unsupported_grant_type")
    description = response.json()["error_description"]
    assert all(0x20 <= ord(c) <= 0x7E and c not in '"\\' for c in description), description
    assert "weird-%22grant%22-%C3%BC%5C" in description


@pytest.mark.parametrize("path", ["/auth/token", "/auth/revoke"])
@pytest.mark.parametrize("field", ["client_id", "client_secret", "audience", "token", "refresh_token"])
async def test_a_lone_surrogate_in_a_json_parameter_is_invalid_request(
    api: httpx.AsyncClient, path: str, field: str
) -> None:
    params = {"grant_type": "client_credentials", "client_id": "api-client", "client_secret": SECRET}
    body = json.dumps({**params, field: "x"}).replace('"x"', '"\\ud800"')
    response = await api.post(path, content=body, headers={"Content-Type": "application/json"})
    assert_oauth_error(response, "invalid_request")
