"""Issued tokens: formats, claims, lifetimes, scope and audience, and what bearer auth accepts."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import httpx
import jwt
import pytest

from fhirbox.app import App
from fhirbox.oauth.key_encryption import KeyEncryption
from fhirbox.oauth.keys import KeyRing, generate_private_key
from fhirbox.oauth.token_formats import InvalidToken, JwtTokens
from tests.oauth.support import SECRET, bearer, client_body, get_token, put_client
from tests.support import ROOT, MovableClock, ServerProcess


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, object], claims: dict[str, object], signature: bytes = b"") -> str:
    return ".".join(
        [b64url(json.dumps(header).encode()), b64url(json.dumps(claims).encode()), b64url(signature)]
    )


async def test_opaque_token_is_long_random_and_url_safe(client: httpx.AsyncClient) -> None:
    await put_client(client, "api-client", client_body())
    first = (await get_token(client, "api-client"))["access_token"]
    second = (await get_token(client, "api-client"))["access_token"]
    assert first != second
    random_part = first.split(".")[1]
    assert len(base64.urlsafe_b64decode(random_part + "=")) >= 32
    assert all(c.isalnum() or c in "-_." for c in first)


async def test_root_token_acts_as_root(client: httpx.AsyncClient) -> None:
    token = await client.post("/auth/token", data={"grant_type": "client_credentials"}, auth=ROOT)
    response = await client.get("/Patient", headers=bearer(token.json()["access_token"]))
    assert response.status_code == 200


@pytest.mark.product_signing_alg
async def test_jwt_access_token_follows_rfc_9068(client: httpx.AsyncClient, app: App) -> None:
    await put_client(client, "api-client", {**client_body(token_format="jwt"), "scope": ["a", "b"]})
    token = await get_token(client, "api-client", audience="https://rs.example")
    header = jwt.get_unverified_header(token["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "RS256" and header["kid"]  # RS256: the default
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert claims["iss"] == app.base_url
    assert claims["sub"] == claims["client_id"] == "api-client"
    assert claims["aud"] == "https://rs.example"
    assert claims["scope"] == "a b" and token["scope"] == "a b"
    assert claims["exp"] - claims["iat"] == token["expires_in"] == 3600
    session = (await client.get(f"/Session/{claims['sid']}", auth=ROOT)).json()
    assert session["scope"] == ["a", "b"] and session["exp"] == claims["exp"]


async def test_session_keeps_only_hashes_of_tokens(client: httpx.AsyncClient, app: App) -> None:
    await put_client(client, "api-client", client_body(refresh_token=True))
    token = await get_token(client, "api-client")
    session_id = token["access_token"].split(".")[0]
    stored = await app.store.read("Session", session_id)
    assert stored is not None
    text = json.dumps(stored.body)
    assert token["access_token"] not in text and token["refresh_token"] not in text
    assert stored.body["access_token"] == hashlib.sha256(token["access_token"].encode()).hexdigest()
    shown = (await client.get(f"/Session/{session_id}", auth=ROOT)).json()
    assert "access_token" not in shown and "refresh_token" not in shown
    search = await client.get("/Session", params={"access_token": stored.body["access_token"]}, auth=ROOT)
    assert search.status_code == 400


async def test_client_lifetime_and_token_expiration_alias(client: httpx.AsyncClient) -> None:
    await put_client(client, "a", client_body(token_expiration=120))
    assert (await get_token(client, "a"))["expires_in"] == 120
    await put_client(client, "b", client_body(token_expiration=120, access_token_expiration=60))
    assert (await get_token(client, "b"))["expires_in"] == 60


@pytest.mark.parametrize("token_format", ["jwt", None])
async def test_expired_token_is_rejected(
    client: httpx.AsyncClient, clock: MovableClock, token_format: str | None
) -> None:
    settings = {"access_token_expiration": 60, **({"token_format": token_format} if token_format else {})}
    await put_client(client, "short-lived", client_body(**settings))
    token = (await get_token(client, "short-lived"))["access_token"]
    assert (await client.get("/Patient", headers=bearer(token))).status_code != 401
    clock.advance(61)
    response = await client.get("/Patient", headers=bearer(token))
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]
    assert "expired" in response.headers["www-authenticate"]


async def test_scope_defaults_to_the_clients_list(client: httpx.AsyncClient) -> None:
    await put_client(client, "scoped", {**client_body(), "scope": ["x", "y"]})
    assert (await get_token(client, "scoped"))["scope"] == "x y"
    assert (await get_token(client, "scoped", scope="y"))["scope"] == "y"


async def test_audience_regex_must_match_the_whole_value(client: httpx.AsyncClient) -> None:
    await put_client(
        client, "aud", client_body(token_format="jwt", audience=["#https://[a-z]+\\.example", "urn:x"])
    )
    ok = await get_token(client, "aud", resource="https://api.example")
    assert jwt.decode(ok["access_token"], options={"verify_signature": False})["aud"] == "https://api.example"
    assert (await get_token(client, "aud", audience="urn:x"))["access_token"]
    assert (await ask_token(client, "aud", "https://api.example.evil.com")).json()[
        "error"
    ] == "invalid_target"


async def ask_token(client: httpx.AsyncClient, client_id: str, audience: str) -> httpx.Response:
    form = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": SECRET}
    return await client.post("/auth/token", json={**form, "audience": audience})


@pytest.mark.parametrize("pattern", ["#(a+)+b", "#(a|aa)+b"])
def test_pathological_audience_regex_answers_on_a_long_audience(server: ServerProcess, pattern: str) -> None:
    """On a backtracking engine the 100,000-character request would not answer within 10 s."""
    with server.client() as http:  # timeout=10 s per request
        created = http.put("/Client/aud", json=client_body(audience=[pattern]), auth=ROOT)
        assert created.status_code == 201, created.text
        form = {"grant_type": "client_credentials", "client_id": "aud", "client_secret": SECRET}
        refused = http.post("/auth/token", json={**form, "audience": "a" * 100_000 + "c"})
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_target"
        assert http.post("/auth/token", json={**form, "audience": "aaab"}).status_code == 200


async def test_audience_regex_keeps_unicode_meaning(client: httpx.AsyncClient) -> None:
    await put_client(client, "aud", client_body(audience=["#urn:\\w+:\\d+"]))
    assert (await get_token(client, "aud", audience="urn:ÿé日本:٣4"))["access_token"]
    assert (await ask_token(client, "aud", "urn:x:")).json()["error"] == "invalid_target"


async def test_bearer_errors_carry_rfc_6750_challenge(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient", headers=bearer("garbage"))
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    challenge = response.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="fhirbox", error="invalid_token", error_description=')
    unauthenticated = await client.get("/Patient")
    assert "Bearer" in unauthenticated.headers["www-authenticate"]


async def test_refresh_token_is_not_a_bearer_token(client: httpx.AsyncClient) -> None:
    for fmt in ("jwt", None):
        settings = {"token_format": fmt} if fmt else {}
        await put_client(client, "r", client_body(refresh_token=True, **settings))
        token = await get_token(client, "r")
        assert (await client.get("/Patient", headers=bearer(token["refresh_token"]))).status_code == 401


async def test_valid_token_without_permission_is_403_not_401(client: httpx.AsyncClient) -> None:
    await put_client(client, "api-client", client_body(token_format="jwt"))
    token = (await get_token(client, "api-client"))["access_token"]
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 403


async def test_every_token_gets_its_own_session(client: httpx.AsyncClient) -> None:
    await put_client(client, "api-client", client_body())
    for _ in range(3):
        await get_token(client, "api-client")
    found = (await client.get("/Session", params={"client.id": "api-client"}, auth=ROOT)).json()
    assert found["total"] == 3
    assert all(entry["resource"]["active"] is True for entry in found["entry"])
    assert all(entry["resource"]["exp"] > time.time() for entry in found["entry"])


class TestForgedJwts:
    """Tokens fhirbox did not issue, or changed after issue, are rejected."""

    @pytest.fixture
    async def issued(self, client: httpx.AsyncClient) -> str:
        await put_client(client, "jwt-client", client_body(token_format="jwt"))
        token: str = (await get_token(client, "jwt-client"))["access_token"]
        return token

    async def rejected(self, client: httpx.AsyncClient, token: str) -> None:
        response = await client.get("/Patient", headers=bearer(token))
        assert response.status_code == 401, response.text

    async def test_genuine_token_authenticates(self, client: httpx.AsyncClient, issued: str) -> None:
        assert (await client.get("/Patient", headers=bearer(issued))).status_code == 403

    async def test_alg_none(self, client: httpx.AsyncClient, issued: str) -> None:
        claims = jwt.decode(issued, options={"verify_signature": False})
        await self.rejected(client, forge({"alg": "none", "typ": "at+jwt"}, claims))

    async def test_hmac_with_the_public_key(self, client: httpx.AsyncClient, issued: str) -> None:
        claims = jwt.decode(issued, options={"verify_signature": False})
        kid = jwt.get_unverified_header(issued)["kid"]
        jwks = (await client.get("/.well-known/jwks.json")).json()
        public = json.dumps(jwks["keys"][0]).encode()
        header = {"alg": "HS256", "typ": "at+jwt", "kid": kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        signature = hmac.new(public, signing_input.encode(), hashlib.sha256).digest()
        await self.rejected(client, f"{signing_input}.{b64url(signature)}")

    async def test_unknown_kid(self, client: httpx.AsyncClient, issued: str) -> None:
        claims = jwt.decode(issued, options={"verify_signature": False})
        alg = jwt.get_unverified_header(issued)["alg"]
        other = generate_private_key(alg)  # the same kind of key as the server's, but another one
        token = jwt.encode(claims, other, algorithm=alg, headers={"kid": "nope", "typ": "at+jwt"})
        await self.rejected(client, token)

    async def test_tampered_payload(self, client: httpx.AsyncClient, issued: str) -> None:
        header, _, signature = issued.split(".")
        claims = jwt.decode(issued, options={"verify_signature": False})
        claims["sub"] = claims["client_id"] = "root"
        await self.rejected(client, f"{header}.{b64url(json.dumps(claims).encode())}.{signature}")

    async def test_other_key_same_kid(self, client: httpx.AsyncClient, issued: str) -> None:
        claims = jwt.decode(issued, options={"verify_signature": False})
        kid = jwt.get_unverified_header(issued)["kid"]
        alg = jwt.get_unverified_header(issued)["alg"]
        other = generate_private_key(alg)  # the same kind of key as the server's, but another one
        token = jwt.encode(claims, other, algorithm=alg, headers={"kid": kid, "typ": "at+jwt"})
        await self.rejected(client, token)


@pytest.mark.signing_alg("RS256")
class TestJwtVerification:
    """The checks on a JWT signed with fhirbox's real key: typ, iss, exp, algorithm pinning (with an
    RSA key, whose public half is the classic HMAC-confusion secret)."""

    @pytest.fixture
    async def verifier(self, app: App) -> JwtTokens:
        keys = KeyRing(app.store, "RS256", None, 3600, KeyEncryption())
        await keys.load()
        return JwtTokens(keys, app.base_url)

    def sign(self, verifier: JwtTokens, typ: str = "at+jwt", **overrides: object) -> str:
        now = int(time.time())
        claims: dict[str, object] = {"iss": verifier.issuer, "sub": "c", "client_id": "c"}
        claims.update(iat=now, exp=now + 60, jti="s")
        claims.update(overrides)
        key = verifier.keys.active
        return jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": typ})

    async def test_genuine_claims_verify(self, verifier: JwtTokens) -> None:
        assert (await verifier.verify_access_token(self.sign(verifier)))["sub"] == "c"

    @pytest.mark.parametrize(
        ("typ", "overrides"),
        [
            ("JWT", {}),
            ("at+jwt", {"iss": "https://elsewhere.example"}),
            ("at+jwt", {"exp": int(time.time()) - 10}),
            ("at+jwt", {"client_id": None}),
        ],
    )
    async def test_wrong_typ_iss_exp_or_missing_claim_fail(
        self, verifier: JwtTokens, typ: str, overrides: dict[str, object]
    ) -> None:
        token = self.sign(verifier, typ, **overrides)
        if overrides.get("client_id", "") is None:
            claims = jwt.decode(token, options={"verify_signature": False})
            del claims["client_id"]
            key = verifier.keys.active
            token = jwt.encode(claims, key.private, algorithm=key.alg, headers={"kid": key.kid, "typ": typ})
        with pytest.raises(InvalidToken):
            await verifier.verify_access_token(token)

    async def test_alg_none_and_hmac_fail_even_with_a_known_kid(self, verifier: JwtTokens) -> None:
        key = verifier.keys.active
        claims = jwt.decode(self.sign(verifier), options={"verify_signature": False})
        unsigned = forge({"alg": "none", "typ": "at+jwt", "kid": key.kid}, claims)
        with pytest.raises(InvalidToken):
            await verifier.verify_access_token(unsigned)
        header = {"alg": "HS256", "typ": "at+jwt", "kid": key.kid}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        secret = json.dumps(key.jwk()).encode()
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken):
            await verifier.verify_access_token(f"{signing_input}.{b64url(signature)}")
