"""The public JWK Sets (RFC 7517 §5) a Client registers for its client assertions: inline as
``Client.jwks`` or served at ``Client.jwks_uri``. Both are held to the same rules, here.

A set is accepted only when every key is a public signing key fhirbox can verify with: ``kty`` RSA
(2048 bits or more), EC (P-256, P-384) or OKP (Ed25519, Ed448), a ``kid``, no private members, and
each ``alg`` (when given) one of ``ASSERTION_ALGORITHMS`` that fits the key.
"""

from __future__ import annotations

from typing import Any

import jwt
import orjson
from cryptography.hazmat.primitives.asymmetric import rsa

# The algorithms a client assertion may be signed with: SMART's RS384 and ES384, and the usual others.
# Never ``none`` or an HMAC algorithm (RFC 7523 §3: the key must identify the client alone).
ASSERTION_ALGORITHMS = ("RS384", "ES384", "RS256", "ES256", "PS256", "PS384", "EdDSA")
MAX_KEYS = 32
MAX_SET_BYTES = 64 * 1024
MAX_KID_LENGTH = 256
MIN_RSA_BITS = 2048

# Members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k", "priv")
_CURVES = {"EC": ("P-256", "P-384"), "OKP": ("Ed25519", "Ed448")}
_ALGORITHMS_OF = {
    "RSA": ("RS256", "RS384", "PS256", "PS384"),
    "EC": ("ES256", "ES384"),
    "OKP": ("EdDSA",),
}
_EC_ALGORITHM = {"P-256": "ES256", "P-384": "ES384"}


class InvalidJwkSet(ValueError):
    """A JWK Set that is malformed, too large, or holds a key fhirbox cannot or must not use."""


def fits(alg: str, key: dict[str, Any]) -> bool:
    """Whether a signature by ``alg`` can be made with ``key`` (its ``kty``, curve and own ``alg``)."""
    kty = key.get("kty")
    if alg not in _ALGORITHMS_OF.get(kty if isinstance(kty, str) else "", ()):
        return False
    if kty == "EC" and _EC_ALGORITHM.get(key.get("crv", "")) != alg:
        return False
    own = key.get("alg")
    return own is None or own == alg


def check_jwk_set(document: Any) -> list[dict[str, Any]]:
    """The keys of ``document``, a public JWK Set; ``InvalidJwkSet`` naming the problem otherwise."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise InvalidJwkSet('must be a JWK Set: an object {"keys": [...]}')
    keys: list[Any] = document["keys"]
    if not keys:
        raise InvalidJwkSet("has no keys")
    if len(keys) > MAX_KEYS:
        raise InvalidJwkSet(f"has {len(keys)} keys; at most {MAX_KEYS} are allowed")
    if len(orjson.dumps(document)) > MAX_SET_BYTES:
        raise InvalidJwkSet(f"is larger than {MAX_SET_BYTES} bytes")
    seen: set[tuple[str, str]] = set()
    for index, key in enumerate(keys):
        _check_key(key, f"keys[{index}]")
        pair = (key["kid"], key["kty"])
        if pair in seen:
            raise InvalidJwkSet(f"keys[{index}] repeats kid {key['kid']!r} for kty {key['kty']}")
        seen.add(pair)
    return keys


def _check_key(key: Any, where: str) -> None:
    if not isinstance(key, dict):
        raise InvalidJwkSet(f"{where} must be a JWK object")
    private = [member for member in PRIVATE_MEMBERS if member in key]
    if private:
        raise InvalidJwkSet(
            f"{where} holds private key members ({', '.join(private)}): register the public key only"
        )
    kty = key.get("kty")
    if kty not in _ALGORITHMS_OF:
        raise InvalidJwkSet(f"{where} has unsupported kty {kty!r}; supported: RSA, EC, OKP")
    kid = key.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH:
        raise InvalidJwkSet(f"{where} needs a kid (a non-empty string of at most {MAX_KID_LENGTH} chars)")
    use = key.get("use")
    if use is not None and use != "sig":
        raise InvalidJwkSet(f"{where} has use {use!r}; a client assertion key has use 'sig' or none")
    curves = _CURVES.get(kty)
    if curves is not None and key.get("crv") not in curves:
        raise InvalidJwkSet(f"{where} has unsupported crv {key.get('crv')!r}; supported: {', '.join(curves)}")
    alg = key.get("alg")
    if alg is not None and (alg not in ASSERTION_ALGORITHMS or not fits(alg, key)):
        raise InvalidJwkSet(f"{where} has alg {alg!r}, which is not allowed for a {kty} key")
    try:
        parsed = jwt.PyJWK(key, algorithm=alg if isinstance(alg, str) else _some_algorithm(key))
    except (jwt.PyJWTError, ValueError, TypeError, KeyError) as exc:
        raise InvalidJwkSet(f"{where} is not a valid {kty} public key: {exc}") from None
    if isinstance(parsed.key, rsa.RSAPublicKey) and parsed.key.key_size < MIN_RSA_BITS:
        raise InvalidJwkSet(f"{where} is an RSA key of {parsed.key.key_size} bits; at least {MIN_RSA_BITS}")


def _some_algorithm(key: dict[str, Any]) -> str:
    kty = key["kty"]
    if kty == "EC":
        return _EC_ALGORITHM[key["crv"]]
    return _ALGORITHMS_OF[kty][0]


def public_key(key: dict[str, Any], alg: str) -> Any:
    """The ``cryptography`` public key of a checked JWK, for verifying ``alg`` signatures."""
    return jwt.PyJWK(key, algorithm=alg).key
