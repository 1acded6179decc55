"""Private signing keys encrypted at rest (``FHIRBOX_KEY_ENCRYPTION_KEY``): AES-256-GCM.

A ``SigningKey`` body holds either ``private_pem`` (unencrypted) or ``private_key_encrypted``:

    {"key_id": "<id of the encryption key>", "nonce": "<base64url, 12 bytes>",
     "ciphertext": "<base64url: the PKCS#8 PEM, sealed, with its 16-byte tag>"}

The associated data is the signing key's ``kid``: a ciphertext copied onto another key's document does
not decrypt. ``key_id`` is the first 16 hex digits of SHA-256 over the encryption key (a 256-bit random
key, so its hash reveals nothing usable); it tells which key sealed a ciphertext, so a missing or wrong
key is reported as such instead of as a failed decryption.
"""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCRYPTED_FIELD = "private_key_encrypted"
PLAIN_FIELD = "private_pem"
NONCE_BYTES = 12


class KeyDecryptionError(Exception):
    """A stored signing key cannot be decrypted: no encryption key, the wrong one, or altered data."""


def decode_key(value: str) -> bytes:
    """The 32 bytes of a setting's base64 value (standard or URL-safe; settings.py checked it)."""
    return base64.b64decode(value.replace("-", "+").replace("_", "/"))


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"fhirbox key encryption key\0" + key).hexdigest()[:16]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def is_encrypted(body: dict[str, Any]) -> bool:
    return ENCRYPTED_FIELD in body


def sealed_with(body: dict[str, Any]) -> str | None:
    """The id of the encryption key a stored key is sealed with; None when it is stored unencrypted."""
    sealed = body.get(ENCRYPTED_FIELD)
    return str(sealed.get("key_id")) if isinstance(sealed, dict) else None


class KeyEncryption:
    """Seals private keys with the current encryption key; opens those sealed with it or the previous.

    Without a current key, nothing is sealed (keys are stored as before: ``private_pem``) and sealed
    keys cannot be opened.
    """

    def __init__(self, current: str | None = None, previous: str | None = None) -> None:
        self._keys: dict[str, AESGCM] = {}
        self.current_id: str | None = None
        self.previous_id: str | None = None
        if current is not None:
            raw = decode_key(current)
            self.current_id = key_id(raw)
            self._keys[self.current_id] = AESGCM(raw)
        if previous is not None:
            raw = decode_key(previous)
            self.previous_id = key_id(raw)
            self._keys.setdefault(self.previous_id, AESGCM(raw))

    @property
    def enabled(self) -> bool:
        return self.current_id is not None

    def store(self, kid: str, pem: str) -> dict[str, Any]:
        """The body fields that keep ``pem``: sealed with the current key, or as it is without one."""
        if self.current_id is None:
            return {PLAIN_FIELD: pem}
        nonce = os.urandom(NONCE_BYTES)
        ciphertext = self._keys[self.current_id].encrypt(nonce, pem.encode(), kid.encode())
        return {
            ENCRYPTED_FIELD: {"key_id": self.current_id, "nonce": _b64(nonce), "ciphertext": _b64(ciphertext)}
        }

    def private_pem(self, kid: str, body: dict[str, Any]) -> bytes:
        """The PEM of the stored key ``kid``, decrypted if it is sealed."""
        sealed = body.get(ENCRYPTED_FIELD)
        if sealed is None:
            return str(body[PLAIN_FIELD]).encode()
        sealed_id = sealed_with(body)
        cipher = self._keys.get(sealed_id or "")
        if cipher is None:
            if not self._keys:
                raise KeyDecryptionError(
                    f"signing key {kid} is encrypted (encryption key id {sealed_id}) but "
                    "FHIRBOX_KEY_ENCRYPTION_KEY is not set"
                )
            given = " or ".join(f"id {known}" for known in self._keys)
            raise KeyDecryptionError(
                f"signing key {kid} is encrypted with encryption key id {sealed_id}, but "
                f"FHIRBOX_KEY_ENCRYPTION_KEY(_PREVIOUS) is {given}: a wrong encryption key"
            )
        try:
            return cipher.decrypt(_unb64(sealed["nonce"]), _unb64(sealed["ciphertext"]), kid.encode())
        except (InvalidTag, KeyError, TypeError, ValueError):
            raise KeyDecryptionError(
                f"signing key {kid} does not decrypt with encryption key id {sealed_id}: "
                "its stored ciphertext was altered or belongs to another key"
            ) from None

    def needs_sealing(self, body: dict[str, Any]) -> bool:
        """True when ``fhirbox keys encrypt`` has work on this stored key: unencrypted, or sealed with
        another key than the current one."""
        return self.enabled and sealed_with(body) != self.current_id

    def reseal(self, kid: str, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with its private key sealed with the current key (decrypted first if need be)."""
        pem = self.private_pem(kid, body).decode()
        resealed = {k: v for k, v in body.items() if k not in (PLAIN_FIELD, ENCRYPTED_FIELD)}
        resealed.update(self.store(kid, pem))
        return resealed
