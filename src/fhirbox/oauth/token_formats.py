"""Access and refresh tokens: opaque (random, carrying their Session's id) and JWT (RFC 9068).

An opaque token is ``<session id>.<256 random bits, base64url>``: the Session is found by its id with
no scan, and the token is then checked against the SHA-256 kept in the Session, in constant time. A
JWT carries the Session's id as ``sid`` (and a ``jti`` of its own, so no two tokens are alike); its
SHA-256 is kept in the Session as well, so that a revoked or replaced JWT stops working at once.

Refresh JWTs are signed with HS256 under a random key each process draws at start and never stores or
publishes: fhirbox accepts a refresh token by its hash in the Session, never by its signature, and no
verifier holding the published JWKS can take one for an access token (``docs/decisions.md``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import random
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from fhirbox.oauth.keys import KeyRing, PrivateKey, SigningKey

ACCESS_TOKEN_TYP = "at+jwt"  # noqa: S105 - a JOSE type, not a secret
REFRESH_TOKEN_TYP = "refresh+jwt"  # noqa: S105 - a JOSE type, not a secret
_REQUIRED_CLAIMS = ["exp", "iat", "iss", "sub", "jti", "client_id"]


class InvalidToken(Exception):
    """A bearer token that is malformed, forged, expired, revoked or of the wrong kind."""


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which a token is kept; the token itself is never stored."""
    return hashlib.sha256(token.encode()).hexdigest()


# Session ids are unique, not secret (a token's secret part comes from ``random_text``): a seeded generator
# spares the event loop a system call per token.
_ids = random.Random(os.urandom(32))
os.register_at_fork(after_in_child=lambda: _ids.seed(os.urandom(32)))


def new_session_id() -> str:
    """A UUIDv7 (RFC 9562): 48 bits of milliseconds, then 74 random bits.

    Time-ordered ids make each new Session land at the end of the store's indexes instead of on a
    random page, which keeps a durable commit of many Sessions small. The token's secret part is
    separate (256 bits), so the id need not be unguessable.
    """
    millis = time.time_ns() // 1_000_000
    rand = _ids.getrandbits(80)
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | 0x7 << 76
        | ((rand >> 62) & 0xFFF) << 64
        | 0b10 << 62
        | (rand & 0x3FFF_FFFF_FFFF_FFFF)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


def random_text(nbytes: int) -> str:
    """``nbytes`` from OpenSSL's CSPRNG (seeded by the OS, reseeded after a fork), base64url.

    Not ``secrets``: ``os.urandom`` lets go of the GIL for its system call, and taking it back
    waits for the store's writer thread; ``RAND_bytes`` keeps it (node-oidc-provider's tokens come
    from the same generator)."""
    return base64.urlsafe_b64encode(ssl.RAND_bytes(nbytes)).rstrip(b"=").decode()


def opaque_token(session_id: str) -> str:
    """``<session id>.<256 random bits>``, URL-safe."""
    return f"{session_id}.{random_text(32)}"


def session_id_of(token: str) -> str | None:
    """The Session id a token names (opaque: its prefix; JWT: its unverified ``sid``, or ``jti`` in
    JWTs issued before ``sid`` existed), or None."""
    dots = token.count(".")
    if dots == 1:
        session_id = token.partition(".")[0]
        return session_id or None
    if dots == 2:
        # Only to find the Session: the token is verified (by PyJWT) once it is known to be current.
        payload = token.split(".")[1]
        try:
            claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(claims, dict):
            return None
        sid = claims.get("sid", claims.get("jti"))
        return sid if isinstance(sid, str) and sid else None
    return None


def is_jwt(token: str) -> bool:
    return token.count(".") == 2


def _b64(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _header(fields: dict[str, str]) -> bytes:
    """A JWS protected header, encoded, with the ``.`` that follows it: the start of a signing input."""
    return _b64(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)) + b"."


# Refresh JWTs are HMAC-signed with this process's unpublished key: fhirbox accepts a refresh token by
# its hash in the Session, never by its signature, and no resource server can verify it against the JWKS.
# An HMAC costs a few µs where a second RSA signature would cost ~385 µs.
_REFRESH_HEADER = _header({"alg": "HS256", "typ": REFRESH_TOKEN_TYP})


def _signature(key: PrivateKey) -> Callable[[bytes], bytes]:
    """The JWS signature function of ``key`` (RFC 7518 §3.3 RS256, §3.4 ES256; RFC 8037 EdDSA)."""
    if isinstance(key, rsa.RSAPrivateKey):
        pkcs1, sha256 = padding.PKCS1v15(), hashes.SHA256()
        return lambda data: key.sign(data, pkcs1, sha256)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        ecdsa = ec.ECDSA(hashes.SHA256())

        def es256(data: bytes) -> bytes:
            # JWS wants R and S as two fixed 32-byte big-endian integers, not OpenSSL's DER.
            r, s = decode_dss_signature(key.sign(data, ecdsa))
            return r.to_bytes(32, "big") + s.to_bytes(32, "big")

        return es256
    return key.sign


class _Signer:
    """What signing with one key needs, prepared once: the encoded header and the signature function."""

    __slots__ = ("access_header", "key", "sign")

    def __init__(self, key: SigningKey) -> None:
        self.key = key
        self.access_header = _header({"alg": key.alg, "kid": key.kid, "typ": ACCESS_TOKEN_TYP})
        self.sign = _signature(key.private)

    def access(self, claims: dict[str, Any]) -> str:
        signing_input = self.access_header + _b64(orjson.dumps(claims))
        return (signing_input + b"." + _b64(self.sign(signing_input))).decode()


class JwtTokens:
    """Signs access and refresh JWTs with the active key, and verifies access JWTs.

    ``issuer`` is the configured base URL; each request passes its own (``Request.base_url``), which
    differs only behind a trusted proxy without ``FHIRBOX_BASE_URL``.
    """

    def __init__(self, keys: KeyRing, issuer: str) -> None:
        self.keys = keys
        self.issuer = issuer
        self._refresh_key = secrets.token_bytes(32)
        self._signer: _Signer | None = None

    def _active_signer(self) -> _Signer:
        """The signer of the active key, prepared again only when the active key changes."""
        key = self.keys.active
        signer = self._signer
        if signer is None or signer.key is not key:
            signer = self._signer = _Signer(key)
        return signer

    def access_token(
        self,
        session_id: str,
        client_id: str,
        issued_at: int,
        expires_at: int,
        audience: str | None,
        scope: list[str] | None,
        *,
        issuer: str,
        jti: str,
    ) -> str:
        """An RFC 9068 access token: ``typ: at+jwt``, ``kid`` of the signing key; ``aud`` is the
        issuer itself when no audience was asked for (RFC 9068 §2.2 requires one)."""
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": client_id,
            "client_id": client_id,
            "iat": issued_at,
            "exp": expires_at,
            "jti": jti,
            "sid": session_id,
            "aud": audience if audience is not None else issuer,
        }
        if scope:
            claims["scope"] = " ".join(scope)
        return self._active_signer().access(claims)

    def refresh_token(
        self,
        session_id: str,
        client_id: str,
        issued_at: int,
        expires_at: int | None,
        *,
        issuer: str,
        jti: str,
    ) -> str:
        """A refresh JWT (claim ``typ: refresh``, header ``typ: refresh+jwt``), with the ``jti`` of the
        access token issued with it; ``rti`` makes every rotated one unique. Signed with this
        process's unpublished key: only its hash in the Session makes it valid."""
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": client_id,
            "iat": issued_at,
            "jti": jti,
            "sid": session_id,
            "typ": "refresh",
            "rti": random_text(16),
        }
        if expires_at is not None:
            claims["exp"] = expires_at
        signing_input = _REFRESH_HEADER + _b64(orjson.dumps(claims))
        return (signing_input + b"." + _b64(hmac.digest(self._refresh_key, signing_input, "sha256"))).decode()

    async def verify_access_token(self, token: str, issuer: str | None = None) -> dict[str, Any]:
        """The claims of a genuine, unexpired access JWT of ``issuer`` (default: the configured one);
        ``InvalidToken`` otherwise.

        The algorithm is pinned to the one of the key named by ``kid``, so ``none``, HMAC and any
        algorithm switch fail; ``typ`` must be ``at+jwt`` (a refresh JWT is not an access token).
        """
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("Malformed JWT") from None
        typ = header.get("typ")
        if not isinstance(typ, str) or typ.lower() not in (ACCESS_TOKEN_TYP, "application/at+jwt"):
            raise InvalidToken("Not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        key = await self.keys.verification_key(kid) if isinstance(kid, str) else None
        if key is None:
            raise InvalidToken("JWT signed by an unknown key")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.public,
                algorithms=[key.alg],
                issuer=issuer or self.issuer,
                # The token's audience names the resource servers it is meant for; fhirbox accepts its
                # own tokens whatever audience they carry.
                options={"require": _REQUIRED_CLAIMS, "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("Token expired") from None
        except jwt.PyJWTError as exc:
            raise InvalidToken(f"Invalid JWT: {exc}") from None
        return claims
