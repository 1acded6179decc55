"""private_key_jwt (RFC 7523 §2.2): Clients with keys, and every check a client assertion must pass."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import jwt
import pytest

from fhirbox.settings import Settings
from tests.oauth.assertions import (
    JWT_BEARER,
    TOKEN_URL,
    KeyPair,
    assertion,
    assertion_client,
    jwk_set,
    key_pair,
    token_form,
)
from tests.oauth.support import SECRET, bearer, put_client
from tests.support import ROOT, MovableClock, basic, from_address, started_app

ES384 = key_pair("ES384")


async def token_by_assertion(http: httpx.AsyncClient, signed: str, **params: str) -> httpx.Response:
    return await http.post("/auth/token", data=token_form(signed, **params))


def refused(response: httpx.Response, check: str) -> None:
    """401 invalid_client with a challenge, and a description naming ``check``."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert body["error"] == "invalid_client"
    assert check in body["error_description"], body["error_description"]
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.headers["cache-control"] == "no-store"


# -- registering keys --------------------------------------------------------------------------------
def _with_private(pair: KeyPair) -> dict[str, Any]:
    return assertion_client(jwks={"keys": [pair.private_jwk]})


BAD_BODIES: dict[str, tuple[dict[str, Any], str]] = {
    "private EC key": (_with_private(ES384), "private key members (d)"),
    "private RSA key": (_with_private(key_pair("RS384")), "private key members (d, p, q, dp, dq, qi)"),
    "symmetric key": (assertion_client(jwks={"keys": [{"kty": "oct", "kid": "h", "k": "c2VjcmV0"}]}), "(k)"),
    "no kid": (
        assertion_client(jwks={"keys": [{k: v for k, v in ES384.public_jwk.items() if k != "kid"}]}),
        "needs a kid",
    ),
    "unsupported kty": (assertion_client(jwks={"keys": [{"kty": "XYZ", "kid": "x"}]}), "unsupported kty"),
    "unsupported curve": (
        assertion_client(jwks={"keys": [{**ES384.public_jwk, "crv": "P-521"}]}),
        "unsupported crv",
    ),
    "alg that does not fit the key": (
        assertion_client(jwks={"keys": [{**ES384.public_jwk, "alg": "RS256"}]}),
        "alg 'RS256'",
    ),
    "HMAC alg": (assertion_client(jwks={"keys": [{**ES384.public_jwk, "alg": "HS256"}]}), "alg 'HS256'"),
    "broken key material": (
        assertion_client(jwks={"keys": [{**ES384.public_jwk, "x": "AAAA"}]}),
        "not a valid EC public key",
    ),
    "keys not a list": (assertion_client(jwks={"keys": {"kty": "EC"}}), "JWK Set"),
    "jwks not an object": (assertion_client(jwks=[ES384.public_jwk]), "JWK Set"),
    "empty set": (assertion_client(jwks={"keys": []}), "has no keys"),
    "too many keys": (
        assertion_client(jwks={"keys": [{**ES384.public_jwk, "kid": f"k{i}"} for i in range(33)]}),
        "at most 32",
    ),
    "oversized set": (
        assertion_client(jwks={"keys": [ES384.public_jwk], "padding": "x" * 70_000}),
        "larger than 65536 bytes",
    ),
    "repeated kid": (assertion_client(jwks=jwk_set(ES384, ES384)), "repeats kid"),
    "ftp jwks_uri": (assertion_client(jwks_uri="ftp://keys.example/jwks.json"), "jwks_uri"),
    "relative jwks_uri": (assertion_client(jwks_uri="/jwks.json"), "jwks_uri"),
    "jwks_uri without host": (assertion_client(jwks_uri="https:///jwks.json"), "jwks_uri"),
    "jwks_uri not a string": (assertion_client(jwks_uri=["https://k.example"]), "jwks_uri"),
    "jwks_uri with bad port": (assertion_client(jwks_uri="https://k.example:99999/j"), "jwks_uri"),
    "assertions without keys": (assertion_client(), "no jwks or jwks_uri"),
    "unknown assertion type": (
        {
            "grant_types": ["client_credentials"],
            "auth": {"client_credentials": {"client_assertion_types": ["urn:example:saml"]}},
        },
        "unknown type",
    ),
    "assertion types not a list": (
        {
            "grant_types": ["client_credentials"],
            "auth": {"client_credentials": {"client_assertion_types": JWT_BEARER}},
        },
        "list of strings",
    ),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_client_with_unusable_keys_is_refused_with_422(root: httpx.AsyncClient, case: str) -> None:
    body, problem = BAD_BODIES[case]
    response = await root.put("/Client/backend", json=body)
    assert response.status_code == 422, response.text
    assert problem in response.text
    assert (await root.get("/Client/backend")).status_code == 404


async def test_client_may_have_a_secret_and_keys(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384, secret=SECRET))
    by_secret = await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=basic("backend", SECRET)
    )
    assert by_secret.status_code == 200
    assert (await token_by_assertion(client, assertion(ES384, "backend"))).status_code == 200


# -- a token by assertion ------------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["RS384", "ES384", "RS256", "ES256", "PS256", "PS384", "EdDSA"])
async def test_assertion_signed_with_each_allowed_algorithm_gets_a_token(
    client: httpx.AsyncClient, alg: str
) -> None:
    pair = key_pair(alg)
    await put_client(client, "backend", assertion_client(pair))
    response = await token_by_assertion(client, assertion(pair, "backend"))
    assert response.status_code == 200, response.text
    assert response.json()["token_type"] == "Bearer"


async def test_token_by_assertion_is_an_ordinary_session_recording_the_method(
    client: httpx.AsyncClient,
) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    await client.put("/AccessPolicy/backend", json={"engine": "allow", "link": [
        {"id": "backend", "resourceType": "Client"}]}, auth=ROOT)  # fmt: skip
    response = await client.post(
        "/auth/token", json={**token_form(assertion(ES384, "backend")), "client_id": "backend"}
    )
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 200
    session_id = token.partition(".")[0]
    session = (await client.get(f"/Session/{session_id}", auth=ROOT)).json()
    assert session["auth_method"] == "private_key_jwt"
    assert session["client"]["id"] == "backend"


async def test_sessions_record_secret_methods_too(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384, secret=SECRET))
    by_basic = await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=basic("backend", SECRET)
    )
    by_post = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "backend", "client_secret": SECRET},
    )
    methods = []
    for response in (by_basic, by_post):
        session_id = response.json()["access_token"].partition(".")[0]
        methods.append((await client.get(f"/Session/{session_id}", auth=ROOT)).json()["auth_method"])
    assert methods == ["client_secret_basic", "client_secret_post"]


async def test_audience_may_be_a_list_holding_the_issuer(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    signed = assertion(ES384, "backend", aud=["https://other.example", "http://testserver"])
    assert (await token_by_assertion(client, signed)).status_code == 200


async def test_without_kid_the_single_key_of_a_matching_kty_is_used(client: httpx.AsyncClient) -> None:
    rsa = key_pair("RS384")
    await put_client(client, "backend", assertion_client(ES384, rsa))
    claims = {"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "j1"}
    signed = jwt.encode(claims, ES384.private, algorithm="ES384")
    assert (await token_by_assertion(client, signed)).status_code == 200


# -- every refusal -------------------------------------------------------------------------------------
OTHER = key_pair("ES384", "ES384-a", other=True)  # same kid as the registered key, different key


def _unsigned(claims: dict[str, Any]) -> str:
    return jwt.encode(claims, None, algorithm="none")


def _hmac(claims: dict[str, Any]) -> str:
    return jwt.encode(
        claims, "a-shared-secret-of-32-bytes-long!", algorithm="HS256", headers={"kid": "ES384-a"}
    )


def _claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": "backend", "sub": "backend", "aud": TOKEN_URL, "exp": now + 60, "jti": "x"}
    claims.update(changes)
    return claims


REFUSALS: dict[str, tuple[Any, str]] = {
    "alg none": (lambda: _unsigned(_claims()), "alg 'none' is not allowed"),
    "HMAC alg": (lambda: _hmac(_claims()), "alg 'HS256' is not allowed"),
    "ES512 alg": (
        lambda: "eyJhbGciOiJFUzUxMiJ9." + jwt.encode(_claims(), None, "none").split(".")[1] + ".AA",
        "alg 'ES512' is not allowed",
    ),
    "unknown kid": (lambda: assertion(ES384, "backend", headers={"kid": "nope"}), "kid 'nope'"),
    "kid of a key of another kty": (
        lambda: jwt.encode(_claims(), key_pair("RS384").private, "RS384", headers={"kid": "ES384-a"}),
        "no registered key with kid 'ES384-a' fits alg RS384",
    ),
    "jku not the registered jwks_uri": (
        lambda: assertion(ES384, "backend", headers={"jku": "https://evil.example/jwks"}),
        "jku does not equal",
    ),
    "wrong key": (lambda: assertion(OTHER, "backend"), "signature does not verify"),
    "tampered payload": (
        lambda: _tamper(assertion(ES384, "backend")),
        "signature does not verify",
    ),
    "no iss": (lambda: assertion(ES384, "backend", drop=("iss",)), "iss is missing"),
    "sub differs": (lambda: assertion(ES384, "backend", sub="someone"), "sub must equal iss"),
    "unknown client": (lambda: assertion(ES384, "nobody"), "iss is not the id of an active client"),
    "client without assertions enabled": (
        lambda: assertion(ES384, "secret-only"),
        "has not enabled the jwt-bearer",
    ),
    "inactive client": (lambda: assertion(ES384, "retired"), "iss is not the id of an active client"),
    "wrong aud": (lambda: assertion(ES384, "backend", aud="https://other.example/token"), "aud must contain"),
    "no aud": (lambda: assertion(ES384, "backend", drop=("aud",)), "aud must contain"),
    "no exp": (lambda: assertion(ES384, "backend", drop=("exp",)), "exp is missing"),
    "exp not a number": (lambda: assertion(ES384, "backend", exp="soon"), "exp is missing"),
    "expired": (lambda: assertion(ES384, "backend", exp=int(time.time()) - 1), "exp has passed"),
    "exp too far ahead": (
        lambda: assertion(ES384, "backend", exp=int(time.time()) + 400),
        "exp is more than 300 s in the future",
    ),
    "nbf in the future": (
        lambda: assertion(ES384, "backend", nbf=int(time.time()) + 120),
        "nbf is more than 60 s in the future",
    ),
    "iat in the future": (
        lambda: assertion(ES384, "backend", iat=int(time.time()) + 120),
        "iat is more than 60 s in the future",
    ),
    "no jti": (lambda: assertion(ES384, "backend", drop=("jti",)), "jti is missing"),
    "jti too long": (lambda: assertion(ES384, "backend", jti="j" * 300), "jti is missing"),
    "jti a lone surrogate": (
        lambda: _raw({"alg": "ES384", "kid": "ES384-a"}, _claims(jti="\ud800")),
        "jti may not contain U+0000 or a lone surrogate",
    ),
    "malformed": (lambda: "not.a.jwt", "not a well-formed signed JWT"),
    "payload not an object": (
        lambda: jwt.api_jws.encode(b"[1, 2]", ES384.private, algorithm="ES384", headers={"kid": "ES384-a"}),
        "not a well-formed signed JWT",
    ),
    "kid not a string": (lambda: _raw({"alg": "ES384", "kid": 7}, _claims()), "not a well-formed signed JWT"),
    "iss not a string": (
        lambda: _raw({"alg": "ES384", "kid": "ES384-a"}, _claims(iss=["backend"], sub=["backend"])),
        "iss is missing",
    ),
    "iss not a possible id": (
        lambda: assertion(ES384, "a/b\u0000c"),
        "iss is not the id of an active client",
    ),
    "oversized": (lambda: "a" * 20_000 + ".b.c", "larger than 16384 bytes"),
}


def _raw(header: dict[str, Any], claims: dict[str, Any]) -> str:
    """A JWT signed by the registered key with whatever header and claims (PyJWT refuses odd ones)."""
    part = [base64.urlsafe_b64encode(json.dumps(x).encode()).rstrip(b"=") for x in (header, claims)]
    signing_input = b".".join(part)
    signature = jwt.get_algorithm_by_name("ES384").sign(signing_input, ES384.private)
    return (signing_input + b"." + base64.urlsafe_b64encode(signature).rstrip(b"=")).decode()


def _tamper(signed: str) -> str:
    header, payload, signature = signed.split(".")
    other = jwt.encode(_claims(iss="backend", sub="backend"), None, algorithm="none").split(".")[1]
    assert other != payload
    return f"{header}.{other}.{signature}"


@pytest.fixture
async def assertion_clients(client: httpx.AsyncClient) -> httpx.AsyncClient:
    await put_client(client, "backend", assertion_client(ES384))
    await put_client(client, "secret-only", {"secret": SECRET, "grant_types": ["client_credentials"],
                                              "jwks": jwk_set(ES384)})  # fmt: skip
    await put_client(client, "retired", assertion_client(ES384, active=False))
    return client


@pytest.mark.parametrize("case", list(REFUSALS))
async def test_each_failed_check_is_invalid_client_naming_it(
    assertion_clients: httpx.AsyncClient, case: str
) -> None:
    build, check = REFUSALS[case]
    refused(await token_by_assertion(assertion_clients, build()), check)


async def test_replayed_assertion_is_refused(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    signed = assertion(ES384, "backend")
    assert (await token_by_assertion(client, signed)).status_code == 200
    refused(await token_by_assertion(client, signed), "jti was already used")


async def test_jti_of_another_client_is_not_a_replay(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    await put_client(client, "backend-2", assertion_client(ES384))
    assert (await token_by_assertion(client, assertion(ES384, "backend", jti="shared"))).status_code == 200
    assert (await token_by_assertion(client, assertion(ES384, "backend-2", jti="shared"))).status_code == 200


async def test_jti_may_be_reused_once_the_first_assertion_expired(
    client: httpx.AsyncClient, clock: MovableClock
) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    assert (await token_by_assertion(client, assertion(ES384, "backend", jti="again"))).status_code == 200
    clock.advance(200)
    later = assertion(ES384, "backend", jti="again", now=clock())
    assert (await token_by_assertion(client, later)).status_code == 200


async def test_refused_signature_does_not_burn_the_jti(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    refused(await token_by_assertion(client, assertion(OTHER, "backend", jti="mine")), "signature")
    assert (await token_by_assertion(client, assertion(ES384, "backend", jti="mine"))).status_code == 200


async def test_expiry_follows_the_servers_clock(client: httpx.AsyncClient, clock: MovableClock) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    signed = assertion(ES384, "backend")
    clock.advance(121)
    refused(await token_by_assertion(client, signed), "exp has passed")


async def test_client_id_must_equal_the_assertions_iss(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    await put_client(client, "other", assertion_client(ES384))
    response = await token_by_assertion(client, assertion(ES384, "backend"), client_id="other")
    refused(response, "client_id differs")


async def test_deactivated_client_cannot_use_assertions(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    assert (await token_by_assertion(client, assertion(ES384, "backend"))).status_code == 200
    await put_client(client, "backend", assertion_client(ES384, active=False))
    refused(await token_by_assertion(client, assertion(ES384, "backend")), "active client")


# -- one method per request ----------------------------------------------------------------------------
async def test_assertion_with_basic_is_invalid_request(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384, secret=SECRET))
    response = await client.post(
        "/auth/token", data=token_form(assertion(ES384, "backend")), headers=basic("backend", SECRET)
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_assertion_with_client_secret_is_invalid_request(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384, secret=SECRET))
    form = {**token_form(assertion(ES384, "backend")), "client_id": "backend", "client_secret": SECRET}
    response = await client.post("/auth/token", data=form)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


@pytest.mark.parametrize(
    "form",
    [
        {"client_assertion": "a.b.c"},
        {"client_assertion_type": JWT_BEARER},
        {"client_assertion_type": JWT_BEARER, "client_assertion": ""},
    ],
)
async def test_half_an_assertion_is_invalid_request(client: httpx.AsyncClient, form: dict[str, str]) -> None:
    response = await client.post("/auth/token", data={"grant_type": "client_credentials", **form})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


async def test_unknown_assertion_type_is_invalid_client(client: httpx.AsyncClient) -> None:
    form = {
        **token_form("a.b.c"),
        "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:saml2-bearer",
    }
    refused(await client.post("/auth/token", data=form), "Unsupported client_assertion_type")


async def test_failed_assertions_are_throttled_like_failed_secrets(settings: Settings) -> None:
    async with started_app(settings, auth_failure_limit=3) as app, from_address(app, "10.1.2.3") as http:
        await put_client(http, "backend", assertion_client(ES384))
        for _ in range(3):
            refused(await token_by_assertion(http, assertion(OTHER, "backend")), "signature")
        throttled = await token_by_assertion(http, assertion(ES384, "backend"))
        assert throttled.status_code == 429
        assert throttled.json()["error"] == "invalid_client"
        assert "retry-after" in throttled.headers


async def test_failed_assertion_is_recorded_in_the_audit_trail(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    refused(await token_by_assertion(client, assertion(OTHER, "backend")), "signature")
    response = await client.get("/AuditEvent", params={"type.code": "client-auth-failed"}, auth=ROOT)
    events = [entry["resource"] for entry in response.json()["entry"]]
    assert len(events) == 1
    assert events[0]["agent"][0]["who"]["reference"] == "Client/backend"
    assert "signature does not verify" in events[0]["outcomeDesc"]
    assert events[0]["outcomeDesc"].endswith("(private_key_jwt)")


async def test_replayed_assertion_is_recorded_as_a_replay(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(ES384))
    signed = assertion(ES384, "backend")
    assert (await token_by_assertion(client, signed)).status_code == 200
    refused(await token_by_assertion(client, signed), "jti was already used")
    response = await client.get("/AuditEvent", params={"type.code": "client-assertion-replayed"}, auth=ROOT)
    events = [entry["resource"] for entry in response.json()["entry"]]
    assert len(events) == 1
    assert events[0]["outcome"] == "8"
    assert events[0]["agent"][0]["who"]["reference"] == "Client/backend"
    assert signed not in str(events[0])


async def test_an_assertion_is_never_checked_against_a_url_taken_from_forwarded_headers(
    settings: Settings,
) -> None:
    """Behind a trusted proxy without FHIRBOX_BASE_URL, this server's URL is the forwarded host, which
    whoever sends the request picks: an assertion made for another authorization server, sent with that
    server's name as the host, would name "this" server. Assertions are refused, saying what to set;
    with FHIRBOX_BASE_URL set, only that URL is the audience, whatever the forwarded host."""
    proxy_address = "10.9.9.9"
    elsewhere = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "evil-as.example"}
    other_server = "https://evil-as.example/auth/token"
    async with started_app(settings, base_url=None, trusted_proxies=proxy_address) as app:
        async with from_address(app, proxy_address) as proxy:
            await put_client(proxy, "backend", assertion_client(ES384))
            response = await proxy.post(
                "/auth/token",
                data=token_form(assertion(ES384, "backend", aud=other_server)),
                headers=elsewhere,
            )
            refused(response, "set FHIRBOX_BASE_URL")
    base = "https://fhir.example.com"
    async with started_app(settings, base_url=base, trusted_proxies=proxy_address) as app:
        async with from_address(app, proxy_address) as proxy:
            await put_client(proxy, "backend", assertion_client(ES384))
            replayed = token_form(assertion(ES384, "backend", aud=other_server))
            refused(await proxy.post("/auth/token", data=replayed, headers=elsewhere), "aud")
            ours = token_form(assertion(ES384, "backend", aud=base + "/auth/token"))
            accepted = await proxy.post("/auth/token", data=ours, headers=elsewhere)
            assert accepted.status_code == 200, accepted.text
