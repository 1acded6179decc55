"""JWTs as fhirbox signs them (its own JWS code, no PyJWT on the signing path) read by another JOSE
library: every algorithm verifies against the published JWKS; a refresh JWT verifies against none."""

from __future__ import annotations

import base64
import json
import os

import httpx
import pytest
from joserfc import jwt as jose_jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet

from fhirbox.oauth.token_formats import random_text
from tests.oauth.support import client_body, get_token, put_client


def segment(token: str, index: int) -> bytes:
    part = token.split(".")[index]
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


async def published_keys(client: httpx.AsyncClient) -> KeySet:
    return KeySet.import_key_set((await client.get("/.well-known/jwks.json")).json())


@pytest.mark.parametrize(
    ("alg", "signature_bytes"),
    [
        pytest.param("RS256", 256, marks=pytest.mark.signing_alg("RS256")),
        pytest.param("ES256", 64, marks=pytest.mark.signing_alg("ES256")),
        pytest.param("EdDSA", 64, marks=pytest.mark.signing_alg("EdDSA")),
    ],
)
async def test_access_jwt_verifies_with_another_jose_library(
    client: httpx.AsyncClient, alg: str, signature_bytes: int
) -> None:
    await put_client(client, "api-client", {**client_body(token_format="jwt"), "scope": ["a", "b"]})
    token = (await get_token(client, "api-client", resource="https://api.example.com/"))["access_token"]
    # ES256 is R || S, 32 bytes each (RFC 7518 §3.4), not the DER OpenSSL returns.
    assert len(segment(token, 2)) == signature_bytes
    decoded = jose_jwt.decode(token, await published_keys(client), algorithms=[alg])
    assert decoded.header["typ"] == "at+jwt" and decoded.header["alg"] == alg
    assert decoded.claims["sub"] == decoded.claims["client_id"] == "api-client"
    assert decoded.claims["aud"] == "https://api.example.com/" and decoded.claims["scope"] == "a b"


@pytest.mark.parametrize(
    "alg",
    [
        pytest.param("RS256", marks=pytest.mark.signing_alg("RS256")),
        pytest.param("ES256", marks=pytest.mark.signing_alg("ES256")),
    ],
)
async def test_refresh_jwt_verifies_against_no_published_key(client: httpx.AsyncClient, alg: str) -> None:
    await put_client(client, "r", client_body(token_format="jwt", refresh_token=True))
    token = await get_token(client, "r")
    refresh = token["refresh_token"]
    header = json.loads(segment(refresh, 0))
    assert header["alg"] == "HS256" and "kid" not in header
    assert json.loads(segment(refresh, 1))["typ"] == "refresh"
    keys = await published_keys(client)
    for algorithms in ([alg], ["HS256"], None):
        with pytest.raises((JoseError, ValueError)):
            jose_jwt.decode(refresh, keys, algorithms=algorithms)
    # Every refresh of the same Session signs a different token.
    again = (await get_token(client, "r"))["refresh_token"]
    assert again != refresh and segment(again, 2) != segment(refresh, 2)


def test_a_forked_worker_draws_other_token_secrets_than_its_parent() -> None:
    # ``--workers N`` forks: OpenSSL's generator must not hand every worker the same tokens.
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:
        os.write(writer, random_text(32).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    in_child = os.read(reader, 100).decode()
    os.close(reader)
    in_parent = {random_text(32) for _ in range(1000)}
    assert len(in_parent) == 1000 and in_child not in in_parent
    assert len(segment(f"x.{in_child}", 1)) == 32
