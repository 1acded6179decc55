"""Private signing keys encrypted at rest (FHIRBOX_KEY_ENCRYPTION_KEY), through real server processes and
the ``fhirbox keys`` command, on both backends."""

from __future__ import annotations

import asyncio
import base64
import os
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from fhirbox.oauth.key_encryption import KeyDecryptionError, KeyEncryption
from fhirbox.oauth.keys import stored_keys
from fhirbox.storage import open_store
from tests.oauth.support import client_body
from tests.oauth.test_keys import accepted, issue
from tests.support import ROOT, ROOT_SECRET, ServerProcess, one_line_error, run_fhirbox

# Tokens must outlive a restart on another port: one issuer for every server of a test.
BASE = {"FHIRBOX_BASE_URL": "http://fhirbox.test"}


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def keys_in(database_url: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        store = open_store(database_url)
        await store.open(create=False)
        try:
            return await stored_keys(store)
        finally:
            await store.close()

    return asyncio.run(read())


def with_jwt_client(server: ServerProcess) -> None:
    with server.client(auth=ROOT) as http:
        assert http.put("/Client/api", json=client_body(token_format="jwt")).status_code in (200, 201)


def keys_command(database_url: str, *args: str, env: dict[str, str] | None = None) -> str:
    done = run_fhirbox("keys", *args, "--database", database_url, env=env)
    assert done.returncode == 0, done.stderr
    return done.stdout


def serve_refused(database_url: str, env: dict[str, str]) -> str:
    done = run_fhirbox(
        "serve", "--port", "0", "--database", database_url,
        env={"FHIRBOX_ROOT_CLIENT_SECRET": ROOT_SECRET, "FHIRBOX_LOG_LEVEL": "warning", **env},
    )  # fmt: skip
    return one_line_error(done, 1, "cannot start: signing key")


def test_with_the_setting_no_private_key_is_stored_in_the_clear(
    server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    key = new_key()
    server = server_factory(env={"FHIRBOX_KEY_ENCRYPTION_KEY": key})
    with_jwt_client(server)
    token = issue(server)
    assert accepted(server, token)
    [stored] = keys_in(database_url)
    raw = orjson.dumps(stored)
    assert b"PRIVATE KEY" not in raw and "private_pem" not in stored
    sealed = stored["private_key_encrypted"]
    assert sealed["key_id"] == KeyEncryption(key).current_id
    assert "warning" not in server.output().lower()  # encrypted: nothing to warn about


def test_a_server_without_the_key_or_with_a_wrong_one_refuses_to_start_in_one_line(
    server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    key = new_key()
    server_factory(env={"FHIRBOX_KEY_ENCRYPTION_KEY": key}).stop()
    missing = serve_refused(database_url, {})
    assert "is encrypted" in missing and "FHIRBOX_KEY_ENCRYPTION_KEY is not set" in missing
    wrong = serve_refused(database_url, {"FHIRBOX_KEY_ENCRYPTION_KEY": new_key()})
    assert f"encryption key id {KeyEncryption(key).current_id}" in wrong and "wrong encryption key" in wrong
    assert key not in missing + wrong


def test_keys_encrypt_seals_plaintext_keys_in_place_and_a_rotation_re_encrypts_them(
    server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    server = server_factory(env=BASE)  # as today: no encryption key
    with_jwt_client(server)
    token = issue(server)
    server.stop()
    [before] = keys_in(database_url)
    assert "private_pem" in before
    assert "unencrypted" in keys_command(database_url, "list")

    first = new_key()
    printed = keys_command(database_url, "encrypt", env={"FHIRBOX_KEY_ENCRYPTION_KEY": first})
    assert "encrypted 1 signing key(s)" in printed
    again = keys_command(database_url, "encrypt", env={"FHIRBOX_KEY_ENCRYPTION_KEY": first})
    assert "encrypted 0 signing key(s)" in again and "1 already were" in again
    [after] = keys_in(database_url)
    assert "private_pem" not in after and after["kid"] == before["kid"]
    # The same key, now encrypted: the token it signed before is still good.
    server = server_factory(env={**BASE, "FHIRBOX_KEY_ENCRYPTION_KEY": first})
    assert accepted(server, token)
    server.stop()

    # Rotation of the encryption key: the new one, the old one as previous, then `keys encrypt`.
    second = new_key()
    rotation = {"FHIRBOX_KEY_ENCRYPTION_KEY": second, "FHIRBOX_KEY_ENCRYPTION_KEY_PREVIOUS": first}
    assert "encrypted 1 signing key(s)" in keys_command(database_url, "encrypt", env=rotation)
    assert KeyEncryption(second).current_id in keys_command(database_url, "list")
    server = server_factory(env={**BASE, "FHIRBOX_KEY_ENCRYPTION_KEY": second})
    assert accepted(server, token)
    server.stop()
    assert "wrong encryption key" in serve_refused(database_url, {"FHIRBOX_KEY_ENCRYPTION_KEY": first})


def test_keys_encrypt_changes_nothing_when_a_key_does_not_decrypt(
    server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    old = new_key()
    server_factory(env={"FHIRBOX_KEY_ENCRYPTION_KEY": old}).stop()
    before = keys_in(database_url)
    done = run_fhirbox(
        "keys", "encrypt", "--database", database_url, env={"FHIRBOX_KEY_ENCRYPTION_KEY": new_key()}
    )
    one_line_error(done, 1, "nothing encrypted", "wrong encryption key")
    assert keys_in(database_url) == before
    rotate = run_fhirbox("keys", "rotate", "--database", database_url)  # no key: no plaintext key beside them
    one_line_error(rotate, 1, "cannot rotate", "FHIRBOX_KEY_ENCRYPTION_KEY is not set")
    assert keys_in(database_url) == before


@pytest.mark.parametrize("workers", [1, 2])
def test_unencrypted_keys_are_warned_about_once_at_start(
    server_factory: Callable[..., ServerProcess], workers: int
) -> None:
    server = server_factory(workers=workers)
    with server.client() as http:
        assert http.get("/.well-known/jwks.json").status_code == 200
    server.stop()
    output = server.output()
    assert output.count("stored unencrypted") == 1, output
    assert "FHIRBOX_KEY_ENCRYPTION_KEY" in output and "fhirbox keys encrypt" in output


def test_with_the_key_set_the_warning_asks_only_to_encrypt_the_stored_keys(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server_factory().stop()  # keys generated and stored unencrypted
    server = server_factory(env={"FHIRBOX_KEY_ENCRYPTION_KEY": new_key()})
    server.stop()
    warnings = [line for line in server.output().splitlines() if "stored unencrypted" in line]
    assert len(warnings) == 1, server.output()
    assert "run `fhirbox keys encrypt`" in warnings[0]
    assert "set FHIRBOX_KEY_ENCRYPTION_KEY" not in warnings[0]


def test_a_ciphertext_is_bound_to_its_kid() -> None:
    encryption = KeyEncryption(new_key())
    sealed = encryption.store("kid-a", "-----BEGIN PRIVATE KEY-----\n...")
    assert encryption.private_pem("kid-a", sealed).startswith(b"-----BEGIN PRIVATE KEY")
    with pytest.raises(KeyDecryptionError, match="altered or belongs to another key"):
        encryption.private_pem("kid-b", sealed)  # copied onto another key's document
    tampered = {"private_key_encrypted": {**sealed["private_key_encrypted"], "nonce": "AAAAAAAAAAAAAAAA"}}
    with pytest.raises(KeyDecryptionError, match="altered"):
        encryption.private_pem("kid-a", tampered)
    garbage = {"private_key_encrypted": {"key_id": encryption.current_id, "nonce": 5}}
    with pytest.raises(KeyDecryptionError):
        encryption.private_pem("kid-a", garbage)


def test_the_previous_key_alone_is_refused() -> None:
    done = run_fhirbox("settings", env={"FHIRBOX_KEY_ENCRYPTION_KEY_PREVIOUS": new_key()})
    one_line_error(done, 2, "FHIRBOX_KEY_ENCRYPTION_KEY_PREVIOUS is set without FHIRBOX_KEY_ENCRYPTION_KEY")
