"""Real, unmodified OAuth client libraries against a real fhirbox process."""

from __future__ import annotations

import subprocess

import httpx
import jwt
import pytest
import requests
from authlib.integrations.httpx_client import AsyncOAuth2Client  # type: ignore[import-untyped]
from authlib.integrations.requests_client import (  # type: ignore[import-untyped]
    OAuth2Session as AuthlibSession,
)
from oauthlib.oauth2 import BackendApplicationClient  # type: ignore[import-untyped]
from requests_oauthlib import OAuth2Session  # type: ignore[import-untyped]

from tests.oauth.support import SECRET, client_body, form_basic
from tests.support import ROOT, ServerProcess


@pytest.fixture
def api(server: ServerProcess) -> ServerProcess:
    with server.client(auth=ROOT) as http:
        body = client_body(token_format="jwt", refresh_token=True)
        assert http.put("/Client/api-client", json=body).status_code == 201
        http.put("/Patient/pt-1", json={"name": [{"family": "Doe"}]})
        policy = {"engine": "allow", "link": [{"id": "api-client", "resourceType": "Client"}]}
        http.put("/AccessPolicy/api-client", json=policy)
    return server


def authenticated(status: int) -> bool:
    # the client's allow policy lets an authenticated call through
    return status == 200


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_oauth2_session(api: ServerProcess, method: str) -> None:
    session = AuthlibSession("api-client", SECRET, token_endpoint_auth_method=method)
    token = session.fetch_token(f"{api.url}/auth/token", grant_type="client_credentials")
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    assert authenticated(session.get(f"{api.url}/Patient/pt-1").status_code)
    refreshed = session.refresh_token(f"{api.url}/auth/token", refresh_token=token["refresh_token"])
    assert refreshed["access_token"] and refreshed["refresh_token"] != token["refresh_token"]
    session.revoke_token(f"{api.url}/auth/revoke", refreshed["access_token"])
    headers = {"Authorization": f"Bearer {refreshed['access_token']}"}
    assert requests.get(f"{api.url}/Patient/pt-1", headers=headers, timeout=10).status_code == 401


async def test_authlib_async_oauth2_client(api: ServerProcess) -> None:
    async with AsyncOAuth2Client("api-client", SECRET, token_endpoint_auth_method="client_secret_post") as c:
        token = await c.fetch_token(f"{api.url}/auth/token", grant_type="client_credentials")
        assert token["access_token"]
        response = await c.get(f"{api.url}/Patient/pt-1")
        assert authenticated(response.status_code)
    async with httpx.AsyncClient() as plain:
        closed = await plain.delete(
            f"{api.url}/Session", headers={"Authorization": f"Bearer {token['access_token']}"}
        )
        assert closed.status_code == 200


def test_requests_oauthlib_backend_application_client(
    api: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    # oauthlib refuses plain http unless told; the test server has no TLS.
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    session = OAuth2Session(client=BackendApplicationClient(client_id="api-client"))
    token = session.fetch_token(
        token_url=f"{api.url}/auth/token", client_id="api-client", client_secret=SECRET
    )
    assert token["token_type"] == "Bearer"
    assert authenticated(session.get(f"{api.url}/Patient/pt-1").status_code)


@pytest.mark.signing_alg("RS256")
def test_pyjwt_jwk_client_verifies_tokens_through_the_jwks(api: ServerProcess) -> None:
    with api.client() as http:
        token = http.post(
            "/auth/token", data={"grant_type": "client_credentials", "audience": "https://rs.example"},
            auth=("api-client", SECRET),
        ).json()["access_token"]  # fmt: skip
    jwks = jwt.PyJWKClient(f"{api.url}/.well-known/jwks.json")
    key = jwks.get_signing_key_from_jwt(token)
    claims = jwt.decode(token, key.key, algorithms=["RS256"], audience="https://rs.example", issuer=api.url)
    assert claims["client_id"] == "api-client"
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(tampered, key.key, algorithms=["RS256"], audience="https://rs.example")


ODD_SECRET = "p+ss:w/rd%20é"


@pytest.fixture
def odd(server: ServerProcess) -> ServerProcess:
    """A Client whose secret differs when form-urldecoded, usable with Basic on the API as well."""
    with server.client(auth=ROOT) as http:
        body = {"secret": ODD_SECRET, "grant_types": ["client_credentials", "basic"]}
        assert http.put("/Client/odd-client", json=body).status_code == 201
    return server


def test_a_secret_with_reserved_characters_works_with_every_client(
    odd: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """curl, requests and Authlib send Basic credentials as they are; RFC 6749 §2.3.1 form-urlencodes
    them: both work at the token endpoint and on the API."""
    token_url = f"{odd.url}/auth/token"
    session = AuthlibSession("odd-client", ODD_SECRET, token_endpoint_auth_method="client_secret_basic")
    assert session.fetch_token(token_url, grant_type="client_credentials")["access_token"]
    monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    oauthlib = OAuth2Session(client=BackendApplicationClient(client_id="odd-client"))
    assert oauthlib.fetch_token(token_url, client_id="odd-client", client_secret=ODD_SECRET)["access_token"]
    grant = {"grant_type": "client_credentials"}
    raw = requests.post(token_url, data=grant, auth=("odd-client", ODD_SECRET), timeout=10)
    assert raw.status_code == 200, raw.text
    form = requests.post(token_url, data=grant, headers=form_basic("odd-client", ODD_SECRET), timeout=10)
    assert form.status_code == 200, form.text
    curl = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-u", f"odd-client:{ODD_SECRET}",
         "-d", "grant_type=client_credentials", token_url],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    assert curl.stdout == "200", curl.stderr
    for auth in ({"auth": ("odd-client", ODD_SECRET)}, {"headers": form_basic("odd-client", ODD_SECRET)}):
        # 403, not 401: the client is authenticated and has no policy
        assert requests.get(f"{odd.url}/Patient", timeout=10, **auth).status_code == 403  # type: ignore[arg-type]
    wrong = requests.post(token_url, data=grant, auth=("odd-client", "p ss"), timeout=10)
    assert wrong.status_code == 401
