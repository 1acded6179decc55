"""private_key_jwt against real server processes: third-party client libraries, and replay
protection shared by every process on the database and kept across a restart."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import pytest
import requests
from authlib.integrations.requests_client import OAuth2Session  # type: ignore[import-untyped]
from authlib.oauth2.rfc7523 import PrivateKeyJWT  # type: ignore[import-untyped]
from cryptography.hazmat.primitives import serialization
from joserfc.jwk import ECKey, RSAKey
from requests_oauth2client import OAuth2Client, PrivateKeyJwt  # type: ignore[import-untyped]

from tests.oauth.assertions import (
    KeyPair,
    assertion,
    assertion_client,
    jwk_set,
    jwks_server,
    key_pair,
    token_form,
)
from tests.support import ROOT, ServerProcess

ES384 = key_pair("ES384")
RS384 = key_pair("RS384")


def register(server: ServerProcess, body: dict[str, object]) -> None:
    with server.client(auth=ROOT) as http:
        assert http.put("/Client/backend", json=body).status_code in (200, 201)
        policy = {"engine": "allow", "link": [{"id": "backend", "resourceType": "Client"}]}
        http.put("/AccessPolicy/backend", json=policy)


def pem(pair: KeyPair) -> str:
    return pair.private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def authlib_session(pair: KeyPair, token_url: str, lifetime: int | None) -> OAuth2Session:
    """Authlib's OAuth2Session with its PrivateKeyJWT client authentication, as its docs show it."""
    key = RSAKey.import_key(pem(pair)) if pair.alg.startswith("RS") else ECKey.import_key(pem(pair))
    session = OAuth2Session("backend", key, token_endpoint_auth_method="private_key_jwt")
    claims = {"exp": int(time.time()) + lifetime} if lifetime is not None else None
    session.register_client_auth_method(
        PrivateKeyJWT(token_url, alg=pair.alg, headers={"kid": pair.kid}, claims=claims)
    )
    return session


def test_authlib_private_key_jwt_with_keys_at_a_jwks_uri(server: ServerProcess) -> None:
    with jwks_server() as keys:
        keys.serve(jwk_set(RS384))
        register(server, assertion_client(jwks_uri=keys.url))
        token_url = f"{server.url}/auth/token"
        session = authlib_session(RS384, token_url, lifetime=120)
        token = session.fetch_token(token_url, grant_type="client_credentials")
        assert token["token_type"] == "Bearer"
        assert session.get(f"{server.url}/Patient").status_code == 200
        # A second session (Authlib keeps the jti in the claims dict it was given: a new one each time).
        again = authlib_session(RS384, token_url, lifetime=120)
        assert again.fetch_token(token_url, grant_type="client_credentials")["access_token"]
        assert keys.requests == 1  # the keys were cached


def test_authlib_default_one_hour_assertion_is_refused_for_its_exp(server: ServerProcess) -> None:
    register(server, assertion_client(ES384))
    token_url = f"{server.url}/auth/token"
    session = authlib_session(ES384, token_url, lifetime=None)
    with pytest.raises(Exception, match="exp is more than 300 s"):
        session.fetch_token(token_url, grant_type="client_credentials")


def test_requests_oauth2client_private_key_jwt_and_introspection(server: ServerProcess) -> None:
    register(server, assertion_client(ES384))
    auth = PrivateKeyJwt("backend", ES384.private_jwk, alg="ES384")
    oauth = OAuth2Client(
        token_endpoint=f"{server.url}/auth/token",
        introspection_endpoint=f"{server.url}/auth/introspect",
        auth=auth,
        testing=True,  # allows http:// on loopback
    )
    token = oauth.client_credentials()
    headers = {"Authorization": f"Bearer {token.access_token}"}
    assert requests.get(f"{server.url}/Patient", headers=headers, timeout=10).status_code == 200
    described = oauth.introspect_token(token.access_token)
    assert described["active"] is True and described["client_id"] == "backend"


def test_replay_is_refused_by_another_server_process(server_factory: Callable[..., ServerProcess]) -> None:
    first, second = server_factory(), server_factory()
    register(first, assertion_client(ES384))
    signed = assertion(ES384, "backend", aud=[f"{first.url}/auth/token", f"{second.url}/auth/token"])
    answers = []
    for server in (first, second, first):
        answers.append(httpx.post(f"{server.url}/auth/token", data=token_form(signed), timeout=10))
    assert [answer.status_code for answer in answers] == [200, 401, 401]
    assert "jti was already used" in answers[1].json()["error_description"]


def test_replay_is_refused_after_a_restart(
    server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    server = server_factory()
    register(server, assertion_client(ES384))
    signed = assertion(ES384, "backend", aud=f"{server.url}/auth/token")
    assert httpx.post(f"{server.url}/auth/token", data=token_form(signed), timeout=10).status_code == 200
    server.stop()
    restarted = ServerProcess(database_url, server.log_dir, signing_alg=server.env.get("FHIRBOX_SIGNING_ALG"))
    restarted._use_port(server.port)
    restarted.start()
    try:
        replay = httpx.post(f"{restarted.url}/auth/token", data=token_form(signed), timeout=10)
        assert replay.status_code == 401
        assert "jti was already used" in replay.json()["error_description"]
    finally:
        restarted.stop()
