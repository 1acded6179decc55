"""Conformance found by third-party clients (issue 10, part 5), checked with third-party verifiers as
strict as ``jose``: PyJWT and joserfc with ``typ``, ``aud``, ``iss`` and ``exp`` required, against a
real server process and its published JWKS."""

from __future__ import annotations

from typing import Any

import httpx
import jwt
import pytest
import requests
from authlib.integrations.requests_client import (  # type: ignore[import-untyped]
    OAuth2Session as AuthlibSession,
)
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from tests.oauth.support import SECRET, bearer, client_body, put_client
from tests.support import ROOT, ServerProcess


@pytest.fixture
def api(server: ServerProcess) -> ServerProcess:
    with server.client(auth=ROOT) as http:
        body = client_body(token_format="jwt", refresh_token=True)
        assert http.put("/Client/api-client", json=body).status_code == 201
        policy = {"engine": "allow", "link": [{"id": "api-client", "resourceType": "Client"}]}
        assert http.put("/AccessPolicy/api-client", json=policy).status_code == 201
    return server


def fetch_token(server: ServerProcess, **params: str) -> dict[str, Any]:
    response = requests.post(
        f"{server.url}/auth/token",
        data={"grant_type": "client_credentials", **params},
        auth=("api-client", SECRET),
        timeout=10,
    )
    assert response.status_code == 200, response.text
    token: dict[str, Any] = response.json()
    return token


def strict_pyjwt(server: ServerProcess, token: str, audience: str) -> dict[str, Any]:
    """What a resource server does with PyJWT: key from the JWKS by kid, every claim required."""
    key = jwt.PyJWKClient(f"{server.url}/.well-known/jwks.json").get_signing_key_from_jwt(token)
    if jwt.get_unverified_header(token).get("typ") != "at+jwt":
        raise jwt.InvalidTokenError("typ is not at+jwt (RFC 9068)")
    claims: dict[str, Any] = jwt.decode(
        token,
        key,
        algorithms=["RS256", "ES256", "EdDSA", "RS384", "ES384"],
        audience=audience,
        issuer=server.url,
        options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
    )
    return claims


def strict_joserfc(server: ServerProcess, token: str, audience: str) -> dict[str, Any]:
    """The same with joserfc (the Python sibling of panva's ``jose``)."""
    keys = KeySet.import_key_set(requests.get(f"{server.url}/.well-known/jwks.json", timeout=10).json())
    decoded = jose_jwt.decode(token, keys)
    if decoded.header.get("typ") != "at+jwt":
        raise JoseError("typ is not at+jwt (RFC 9068)")
    registry = jose_jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": server.url},
        aud={"essential": True, "value": audience},
        exp={"essential": True},
        iat={"essential": True},
        jti={"essential": True},
        sub={"essential": True},
    )
    registry.validate(decoded.claims)
    return dict(decoded.claims)


def test_a_jwt_asked_for_without_audience_is_for_the_issuer(api: ServerProcess) -> None:
    """RFC 9068 §2.2: aud is required; with no audience asked, it is the issuer."""
    token = fetch_token(api)["access_token"]
    assert strict_pyjwt(api, token, audience=api.url)["aud"] == api.url
    assert strict_joserfc(api, token, audience=api.url)["aud"] == api.url


def test_a_jwt_asked_for_an_audience_carries_it(api: ServerProcess) -> None:
    token = fetch_token(api, audience="https://rs.example")["access_token"]
    assert strict_pyjwt(api, token, audience="https://rs.example")["aud"] == "https://rs.example"
    assert strict_joserfc(api, token, audience="https://rs.example")["aud"] == "https://rs.example"
    with pytest.raises(jwt.InvalidAudienceError):
        strict_pyjwt(api, token, audience=api.url)


def test_a_refresh_token_is_never_accepted_as_an_access_token_with_the_jwks(api: ServerProcess) -> None:
    refresh = fetch_token(api)["refresh_token"]
    with pytest.raises(jwt.PyJWTError):
        strict_pyjwt(api, refresh, audience=api.url)
    with pytest.raises(JoseError):
        strict_joserfc(api, refresh, audience=api.url)
    # even a lenient verifier that tries every published key, ignores typ and requires no claims fails
    jwks = requests.get(f"{api.url}/.well-known/jwks.json", timeout=10).json()
    for key in jwks["keys"]:
        public = jwt.PyJWK(key)
        with pytest.raises(jwt.PyJWTError):
            jwt.decode(
                refresh,
                public,
                algorithms=["RS256", "ES256", "EdDSA", "HS256"],
                options={"verify_aud": False},
            )
    # the refresh token keeps its documented claims
    claims = jwt.decode(refresh, options={"verify_signature": False})
    assert claims["typ"] == "refresh" and claims["sub"] == "api-client" and claims["iss"] == api.url
    assert claims["jti"] and claims["sid"] and claims["rti"]
    assert jwt.get_unverified_header(refresh)["typ"] == "refresh+jwt"


def test_fhirbox_refuses_a_refresh_token_as_an_access_token(api: ServerProcess) -> None:
    refresh = fetch_token(api)["refresh_token"]
    response = requests.get(f"{api.url}/Patient", headers=bearer(refresh), timeout=10)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_a_refreshed_access_token_is_never_the_one_it_replaces(api: ServerProcess) -> None:
    """Refreshes within one second used to return the very same JWT."""
    token = fetch_token(api)
    seen = {token["access_token"]}
    refresh = token["refresh_token"]
    for _ in range(3):
        response = requests.post(
            f"{api.url}/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": refresh},
            auth=("api-client", SECRET),
            timeout=10,
        )
        assert response.status_code == 200, response.text
        new = response.json()
        assert new["access_token"] not in seen
        seen.add(new["access_token"])
        refresh = new["refresh_token"]
    jtis = {jwt.decode(t, options={"verify_signature": False})["jti"] for t in seen}
    assert len(jtis) == len(seen)
    # only the newest access token works: the replaced ones stopped at their refresh
    newest = new["access_token"]
    assert requests.get(f"{api.url}/Patient", headers=bearer(newest), timeout=10).status_code == 200
    for old in seen - {newest}:
        assert requests.get(f"{api.url}/Patient", headers=bearer(old), timeout=10).status_code == 401


async def test_a_refreshed_opaque_access_token_differs_too(client: httpx.AsyncClient) -> None:
    await put_client(client, "api-client", client_body(refresh_token=True))
    first = (
        await client.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("api-client", SECRET)
        )
    ).json()
    second = (
        await client.post(
            "/auth/token",
            data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
            auth=("api-client", SECRET),
        )
    ).json()
    assert second["access_token"] != first["access_token"]
    assert (await client.get("/Patient", headers=bearer(first["access_token"]))).status_code == 401


@pytest.mark.parametrize("header", ["Bearer", "Bearer ", "Bearer a b", "Bearer abc def", "bearer \tx y"])
async def test_a_bearer_header_without_one_token_is_invalid_request(
    client: httpx.AsyncClient, header: str
) -> None:
    """RFC 6750 §3.1: a malformed request is 400 ``invalid_request``, not 401."""
    response = await client.get("/Patient", headers={"Authorization": header})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_request"' in challenge


async def test_a_well_formed_unknown_bearer_token_is_still_invalid_token(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient", headers={"Authorization": "Bearer abc.def"})
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]


def test_revocation_answers_an_empty_json_object(api: ServerProcess) -> None:
    """simple-oauth2 parses the revocation response as JSON; RFC 7009 leaves the body to us."""
    session = AuthlibSession("api-client", SECRET, token_endpoint_auth_method="client_secret_basic")
    token = session.fetch_token(f"{api.url}/auth/token", grant_type="client_credentials")
    response = session.revoke_token(f"{api.url}/auth/revoke", token["access_token"])
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}
    assert response.headers["cache-control"] == "no-store"
    # an unknown token is answered alike (RFC 7009 §2.2)
    unknown = requests.post(
        f"{api.url}/auth/revoke", data={"token": "nope"}, auth=("api-client", SECRET), timeout=10
    )
    assert unknown.status_code == 200 and unknown.json() == {}
