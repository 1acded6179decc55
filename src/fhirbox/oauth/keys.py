"""JWT signing keys: generated on first start and kept in the database, or read from a PEM file.

Keys are resources of the server-internal type ``SigningKey`` (hidden from the REST API), so every
process on one database signs and verifies with the same keys and a restart invalidates nothing. The
active key signs; older keys stay published in the JWKS, and usable for verification, until
``drop_after`` (set when they are retired, past the expiry of every token they can have signed).
With ``FHIRBOX_KEY_ENCRYPTION_KEY`` the private keys are stored encrypted (``key_encryption.py``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from fhirbox.audit import Audit
from fhirbox.models.audit_event import SERVER, SIGNING_KEY_GENERATED, SIGNING_KEY_RETIRED, Entity
from fhirbox.models.client import CLIENT, client_credentials_of
from fhirbox.oauth.key_encryption import KeyDecryptionError, KeyEncryption, is_encrypted
from fhirbox.storage.base import UNCHANGED, SearchQuery, Store, Stored

log = logging.getLogger("fhirbox.oauth.keys")

KEY_TYPE = "SigningKey"
ALGORITHMS = ("RS256", "ES256", "EdDSA")
RSA_BITS = 2048
# Keys retired by a rotation stay verifiable this long beyond the longest token lifetime, to cover
# tokens signed by processes that have not yet heard of the rotation.
RETIRE_MARGIN = 60

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class UnusableKey(Exception):
    """A signing key cannot be used (wrong type, too weak, unreadable)."""


def generate_private_key(alg: str) -> PrivateKey:
    """A fresh key for ``alg``: RSA-2048 for RS256, P-256 for ES256, Ed25519 for EdDSA."""
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    raise UnusableKey(f"Unsupported signing algorithm {alg!r}; use one of {', '.join(ALGORITHMS)}")


def algorithm_of(key: PrivateKey) -> str:
    """The JWS algorithm a private key signs with; refuses weak or unsupported keys."""
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < RSA_BITS:
            raise UnusableKey(f"RSA keys must have at least {RSA_BITS} bits, this one has {key.key_size}")
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        if not isinstance(key.curve, ec.SECP256R1):
            raise UnusableKey(f"EC keys must be on P-256 (ES256), not {key.curve.name}")
        return "ES256"
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "EdDSA"
    raise UnusableKey(f"Unsupported key type {type(key).__name__}: use RSA, EC P-256 or Ed25519")


def load_private_pem(pem: bytes) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise UnusableKey(f"Not a readable unencrypted PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey):
        raise UnusableKey(f"Unsupported key type {type(key).__name__}: use RSA, EC P-256 or Ed25519")
    algorithm_of(key)
    return key


def private_pem(key: PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def public_jwk(key: PublicKey) -> dict[str, Any]:
    if isinstance(key, rsa.RSAPublicKey):
        return RSAAlgorithm.to_jwk(key, as_dict=True)
    if isinstance(key, ec.EllipticCurvePublicKey):
        return ECAlgorithm.to_jwk(key, as_dict=True)
    return OKPAlgorithm.to_jwk(key, as_dict=True)


def thumbprint(jwk: dict[str, Any]) -> str:
    """The RFC 7638 JWK thumbprint (SHA-256, base64url), used as ``kid``."""
    members = {"RSA": ("e", "kty", "n"), "EC": ("crv", "kty", "x", "y"), "OKP": ("crv", "kty", "x")}
    required = {name: jwk[name] for name in members[jwk["kty"]]}
    digest = hashlib.sha256(orjson.dumps(required, option=orjson.OPT_SORT_KEYS)).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str
    alg: str
    private: PrivateKey
    public: PublicKey
    created: float
    retired: float | None = None
    drop_after: float | None = None

    @classmethod
    def of(cls, private: PrivateKey, created: float) -> SigningKey:
        public = private.public_key()
        return cls(thumbprint(public_jwk(public)), algorithm_of(private), private, public, created)

    @classmethod
    def from_body(cls, body: dict[str, Any], encryption: KeyEncryption) -> SigningKey:
        """The stored key, decrypted if need be (``KeyDecryptionError`` when it cannot be)."""
        private = load_private_pem(encryption.private_pem(body["kid"], body))
        return cls(
            kid=body["kid"],
            alg=body["alg"],
            private=private,
            public=private.public_key(),
            created=body["created"],
            retired=body.get("retired"),
            drop_after=body.get("drop_after"),
        )

    def body(self, encryption: KeyEncryption) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kid": self.kid,
            "alg": self.alg,
            **encryption.store(self.kid, private_pem(self.private)),
            "created": self.created,
        }
        if self.retired is not None:
            body["retired"] = self.retired
        if self.drop_after is not None:
            body["drop_after"] = self.drop_after
        return body

    def published(self, now: float) -> bool:
        return self.drop_after is None or now < self.drop_after

    def jwk(self) -> dict[str, Any]:
        jwk = public_jwk(self.public)
        jwk.pop("key_ops", None)  # RFC 7517 §4.3: not together with "use"
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}


async def stored_keys(store: Store) -> list[dict[str, Any]]:
    """Every ``SigningKey`` body in the database (a handful: one per rotation still kept)."""
    return (await store.search(KEY_TYPE, SearchQuery(limit=1000))).resources


async def create_key(
    store: Store, alg: str, encryption: KeyEncryption, audit: Audit | None = None, why: str = ""
) -> SigningKey:
    """Add a new active key for ``alg``. Processes racing here agree: each slot id is created once.
    The key that is created is recorded (kid and alg, never the key) in the same transaction."""
    existing = await stored_keys(store)
    slot = 1 + sum(1 for key in existing if key.get("alg") == alg)
    while True:
        candidate = SigningKey.of(await asyncio.to_thread(generate_private_key, alg), time.time())
        body = candidate.body(encryption)

        def create_once(current: Stored | None, body: dict[str, Any] = body) -> Any:
            return UNCHANGED if current is not None else dict(body)

        generated = (
            audit.event(
                SIGNING_KEY_GENERATED,
                action="C",
                agent=SERVER,
                entities=(Entity(f"{KEY_TYPE}/{alg}-{slot}", (("kid", candidate.kid), ("alg", alg))),),
                reason=why,
            )
            if audit is not None
            else None
        )
        attach = Audit.attach(if_changed=[generated])
        result = await store.mutate(KEY_TYPE, f"{alg}-{slot}", create_once, attach=attach)
        assert result.after is not None
        winner = SigningKey.from_body(result.after.body, encryption)
        if winner.retired is None:
            return winner
        slot += 1


async def retire_keys(store: Store, keep: str, lifetime: int, audit: Audit | None = None) -> None:
    """Retire every active key but ``keep``; each stays verifiable ``lifetime`` (+ margin) more."""
    now = time.time()
    for stored in await stored_keys(store):
        if stored.get("kid") == keep or stored.get("retired") is not None:
            continue

        def retire(current: Stored | None) -> dict[str, Any] | Any:
            if current is None or current.deleted or current.body.get("retired") is not None:
                return UNCHANGED
            return {**current.body, "retired": now, "drop_after": now + lifetime + RETIRE_MARGIN}

        retired = (
            audit.event(
                SIGNING_KEY_RETIRED,
                action="U",
                agent=SERVER,
                entities=(Entity(f"{KEY_TYPE}/{stored['id']}", (("kid", str(stored.get("kid"))),)),),
                reason=f"replaced by {keep}",
            )
            if audit is not None
            else None
        )
        await store.mutate(KEY_TYPE, stored["id"], retire, attach=Audit.attach(if_changed=[retired]))


async def longest_token_lifetime(store: Store, default: int) -> int:
    """The longest access-token lifetime any Client may get (JWTs a retired key signed end by then)."""
    longest = default
    offset = 0
    while True:
        page = await store.search(CLIENT, SearchQuery(limit=1000, offset=offset))
        for body in page.resources:
            longest = max(longest, client_credentials_of(body, default).access_token_expiration)
        offset += len(page.resources)
        if not page.resources or offset >= (page.total or 0):
            return longest


async def rotate_keys(
    store: Store,
    alg: str,
    default_lifetime: int,
    encryption: KeyEncryption,
    audit: Audit | None = None,
) -> SigningKey:
    """``fhirbox keys rotate``: a new active key; the others retire once their tokens can expire.
    Every stored key must decrypt first: a rotation never adds a key that the servers could not read,
    nor a plaintext key beside encrypted ones."""
    for body in await stored_keys(store):
        SigningKey.from_body(body, encryption)
    key = await create_key(store, alg, encryption, audit, "rotation (fhirbox keys rotate)")
    await retire_keys(store, key.kid, await longest_token_lifetime(store, default_lifetime), audit)
    return key


class KeyRing:
    """The keys of this process: the active signing key and every key still published.

    Loaded at start and reloaded whenever a ``SigningKey`` changes anywhere (``store.subscribe``).
    """

    def __init__(
        self,
        store: Store,
        alg: str,
        key_file: str | None,
        default_lifetime: int,
        encryption: KeyEncryption,
        audit: Audit | None = None,
    ) -> None:
        self.store = store
        self.audit = audit
        self.alg = alg
        self.encryption = encryption
        # Kids of the stored keys whose private key is not encrypted (as of the last load).
        self.unencrypted: list[str] = []
        self.key_file = key_file
        self.default_lifetime = default_lifetime
        self._file_key: SigningKey | None = None
        self._keys: dict[str, SigningKey] = {}
        self._active: SigningKey | None = None
        self._reload: asyncio.Task[None] | None = None
        self._last_miss_reload = 0.0
        store.subscribe(self._changed)

    @property
    def active(self) -> SigningKey:
        if self._active is None:
            raise RuntimeError("signing keys are not loaded")
        return self._active

    async def start(self) -> None:
        """Load the key file, or make sure the database holds an active key for the configured alg."""
        if self.key_file:
            with open(self.key_file, "rb") as handle:
                self._file_key = SigningKey.of(load_private_pem(handle.read()), 0.0)
        else:
            current = [SigningKey.from_body(b, self.encryption) for b in await stored_keys(self.store)]
            if not any(key.alg == self.alg and key.retired is None for key in current):
                key = await create_key(
                    self.store, self.alg, self.encryption, self.audit, f"no active {self.alg} key at start"
                )
                # The configured algorithm changed: keys of the old one retire like a rotation.
                await retire_keys(
                    self.store,
                    key.kid,
                    await longest_token_lifetime(self.store, self.default_lifetime),
                    self.audit,
                )
        await self.load()

    async def load(self) -> None:
        keys = {}
        unencrypted = []
        for body in await stored_keys(self.store):
            key = SigningKey.from_body(body, self.encryption)
            keys[key.kid] = key
            if not is_encrypted(body):
                unencrypted.append(key.kid)
        self.unencrypted = unencrypted
        candidates = [key for key in keys.values() if key.alg == self.alg and key.retired is None]
        if self._file_key is not None:
            keys[self._file_key.kid] = self._file_key
            self._active = self._file_key
        elif candidates:
            self._active = max(candidates, key=lambda key: (key.created, key.kid))
        self._keys = keys

    def _changed(self, type_: str, id_: str) -> None:
        if type_ == KEY_TYPE and (self._reload is None or self._reload.done()):
            self._reload = asyncio.get_running_loop().create_task(self._reload_keys())

    async def _reload_keys(self) -> None:
        try:
            await self.load()
        except KeyDecryptionError as exc:
            # Keys changed by another process with another encryption key: keep the keys in memory.
            log.error("signing keys not reloaded: %s", exc)

    def published(self) -> list[SigningKey]:
        now = time.time()
        return [key for key in self._keys.values() if key.published(now)]

    async def verification_key(self, kid: str) -> SigningKey | None:
        """The published key ``kid``; an unknown kid reloads once a second at most (a fresh rotation)."""
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._last_miss_reload > 1.0:
            self._last_miss_reload = time.monotonic()
            await self._reload_keys()
            key = self._keys.get(kid)
        if key is None or not key.published(time.time()):
            return None
        return key

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.published()]}
