"""Signing keys: kept across restarts and processes, rotated by the CLI, chosen by setting or PEM file."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tests.oauth.support import SECRET, bearer, client_body
from tests.support import REPO, ROOT, ServerProcess, wait_until

JWT_CLIENT = client_body(token_format="jwt")


def issue(server: ServerProcess) -> str:
    with server.client() as http:
        response = http.post("/auth/token", data={"grant_type": "client_credentials"}, auth=("api", SECRET))
        assert response.status_code == 200, response.text
        token: str = response.json()["access_token"]
        return token


def accepted(server: ServerProcess, token: str) -> bool:
    with server.client() as http:
        return http.get("/Patient", headers=bearer(token)).status_code == 403


def jwks(server: ServerProcess) -> list[dict[str, str]]:
    with server.client() as http:
        keys: list[dict[str, str]] = http.get("/.well-known/jwks.json").json()["keys"]
        return keys


def verify_with_jwks(server: ServerProcess, token: str) -> dict[str, object]:
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [key for key in jwks(server) if key["kid"] == kid]
    key = jwt.PyJWK(jwk)
    claims: dict[str, object] = jwt.decode(
        token, key.key, algorithms=[jwk["alg"]], options={"verify_aud": False}
    )
    return claims


def rotate(database_url: str, signing_alg: str | None) -> str:
    env = {name: value for name, value in os.environ.items() if name != "FHIRBOX_SIGNING_ALG"}
    if signing_alg is not None:
        env["FHIRBOX_SIGNING_ALG"] = signing_alg
    result = subprocess.run(
        [sys.executable, "-m", "fhirbox.cli", "keys", "rotate", "--database", database_url],
        capture_output=True, text=True, cwd=REPO, timeout=60, env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_token_issued_before_a_restart_still_works_after(
    server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    server = server_factory()
    with server.client(auth=ROOT) as http:
        http.put("/Client/api", json=JWT_CLIENT)
    token = issue(server)
    before = jwks(server)
    server.stop()
    restarted = server_factory(env={"FHIRBOX_BASE_URL": server.url})
    assert jwks(restarted) == before
    assert accepted(restarted, token)


def test_two_processes_share_the_keys(server_factory: Callable[..., ServerProcess]) -> None:
    shared = {"FHIRBOX_BASE_URL": "http://fhirbox.test"}
    first, second = server_factory(env=shared), server_factory(env=shared)
    with first.client(auth=ROOT) as http:
        http.put("/Client/api", json=JWT_CLIENT)
    assert jwks(first) == jwks(second)
    assert accepted(second, issue(first))


@pytest.mark.product_signing_alg
def test_rotation_keeps_old_tokens_valid_and_publishes_both_keys(
    server_factory: Callable[..., ServerProcess], database_url: str, signing_alg: str | None
) -> None:
    server = server_factory()
    with server.client(auth=ROOT) as http:
        http.put("/Client/api", json=JWT_CLIENT)
    old = issue(server)
    old_kid = jwt.get_unverified_header(old)["kid"]
    assert "new active signing key" in rotate(database_url, signing_alg)

    def new_key_in_use() -> str | None:
        token = issue(server)
        return token if jwt.get_unverified_header(token)["kid"] != old_kid else None

    new = wait_until(new_key_in_use)
    keys = jwks(server)
    assert {key["kid"] for key in keys} == {old_kid, jwt.get_unverified_header(new)["kid"]}
    assert all(key["use"] == "sig" and key["alg"] == "RS256" for key in keys)  # the product's default
    assert accepted(server, old) and accepted(server, new)
    assert verify_with_jwks(server, old)["sub"] == "api"
    assert verify_with_jwks(server, new)["sub"] == "api"


@pytest.mark.parametrize(("alg", "kty"), [("RS256", "RSA"), ("ES256", "EC"), ("EdDSA", "OKP")])
def test_signing_algorithm_is_chosen_by_setting(
    server_factory: Callable[..., ServerProcess], alg: str, kty: str
) -> None:
    server = server_factory(env={"FHIRBOX_SIGNING_ALG": alg})
    with server.client(auth=ROOT) as http:
        http.put("/Client/api", json=JWT_CLIENT)
    token = issue(server)
    assert jwt.get_unverified_header(token)["alg"] == alg
    [key] = jwks(server)
    assert key["kty"] == kty and key["alg"] == alg
    assert accepted(server, token)
    assert verify_with_jwks(server, token)["client_id"] == "api"


@pytest.mark.signing_alg("RS256")
def test_rsa_keys_are_2048_bits_at_least(server: ServerProcess) -> None:
    [key] = jwks(server)
    assert key["kty"] == "RSA"
    assert len(jwt.utils.base64url_decode(key["n"])) * 8 >= 2048


def test_signing_key_can_come_from_a_pem_file(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "key.pem"
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = server_factory(env={"FHIRBOX_SIGNING_KEY_FILE": str(path)})
    with server.client(auth=ROOT) as http:
        http.put("/Client/api", json=JWT_CLIENT)
    token = issue(server)
    claims = jwt.decode(token, private.public_key(), algorithms=["ES256"], options={"verify_aud": False})
    assert claims["sub"] == "api"
    assert accepted(server, token)


def test_weak_rsa_key_file_is_refused_at_start(database_url: str, tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505 - the point of the test
    path = tmp_path / "weak.pem"
    path.write_bytes(
        weak.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server = ServerProcess(database_url, tmp_path, env={"FHIRBOX_SIGNING_KEY_FILE": str(path)})
    with pytest.raises(RuntimeError, match="at least 2048 bits"):
        server.start(timeout=30)
    server.stop()
