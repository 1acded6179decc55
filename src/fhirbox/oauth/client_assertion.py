"""Client authentication by a JWT assertion signed with the client's key: RFC 7523 §2.2 and §3
(``private_key_jwt``), as SMART Backend Services ("client-confidential-asymmetric") uses it.

``ClientAssertions.verify`` reads as the RFC's checks, in order, and each refusal is
``invalid_client`` naming the check that failed. The key comes from the Client's inline ``jwks`` or
from its ``jwks_uri`` (``JwksFetcher``); the ``jti`` is recorded in the store until the assertion's
``exp``, so an assertion is accepted once, by whichever server process on the database sees it first,
and never again, restarts included.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import jwt
import orjson

from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.clock import Clock
from fhirbox.models import ID_PATTERN
from fhirbox.models.client import Client
from fhirbox.models.jwk_set import ASSERTION_ALGORITHMS, fits, public_key
from fhirbox.oauth.errors import InvalidClientAssertion
from fhirbox.oauth.jwks_fetch import JwksFetcher, JwksUnavailable
from fhirbox.storage.base import Store, storable_text

MAX_ASSERTION_BYTES = 16 * 1024
MAX_LIFETIME = 300  # exp at most 5 minutes ahead
MAX_SKEW = 60  # nbf and iat at most 60 s ahead
MAX_JTI_LENGTH = 256
# The namespace of assertion ids in ``Store.remember_once``.
REPLAY_NAMESPACE = "client-assertion-jti"
TOKEN_PATH = "/auth/token"  # noqa: S105 - a path, not a secret


def unverified_issuer(assertion: str) -> str | None:
    """The ``iss`` an assertion claims, unverified: whom to count a failure against, or None."""
    parts = assertion.split(".")
    if len(parts) != 3 or len(assertion) > MAX_ASSERTION_BYTES:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) and ID_PATTERN.match(iss) else None


def _refuse(check: str, *, replayed: bool = False) -> InvalidClientAssertion:
    return InvalidClientAssertion(f"Invalid client assertion: {check}", replayed=replayed)


class ClientAssertions:
    """Verifies ``client_assertion`` JWTs; the authenticated Client, or ``InvalidClientAssertion``."""

    def __init__(self, clients: ClientDirectory, fetcher: JwksFetcher, store: Store, clock: Clock) -> None:
        self.clients = clients
        self.fetcher = fetcher
        self.store = store
        self.clock = clock

    async def verify(
        self, assertion: str, *, client_id: str | None, issuer: str, endpoint: str | None = None
    ) -> Client:
        """The Client ``assertion`` authenticates, sent to ``endpoint`` (a URL) of the server whose
        base URL, as this request sees it, is ``issuer``. ``client_id`` is the body's, if sent: it
        must be the assertion's ``iss``."""
        if len(assertion) > MAX_ASSERTION_BYTES:
            raise _refuse(f"larger than {MAX_ASSERTION_BYTES} bytes")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _refuse("not a well-formed signed JWT") from None

        # The signature algorithm: an asymmetric one of the allowed list, never none or HMAC.
        alg = header.get("alg")
        if alg not in ASSERTION_ALGORITHMS:
            raise _refuse(f"alg {alg!r} is not allowed; use one of {', '.join(ASSERTION_ALGORITHMS)}")

        # iss = sub = the id of an active Client that accepts jwt-bearer assertions.
        iss, sub = claims.get("iss"), claims.get("sub")
        if not isinstance(iss, str) or not iss:
            raise _refuse("iss is missing")
        if sub != iss:
            raise _refuse("sub must equal iss (the client id)")
        if client_id is not None and client_id != iss:
            raise _refuse("client_id differs from the assertion's iss")
        client = await self.clients.get(iss) if ID_PATTERN.match(iss) else None
        if client is None:
            raise _refuse("iss is not the id of an active client")
        if not client.accepts_jwt_assertion:
            raise _refuse("this client has not enabled the jwt-bearer client assertion type")

        # The key: registered under the header's kid with a kty that can make this signature.
        key = await self._key(client, header, alg)
        try:
            jwt.decode(
                assertion,
                key,
                algorithms=[alg],
                # Times are checked below against the server's clock; aud by its own rule.
                options={"verify_exp": False, "verify_nbf": False, "verify_iat": False, "verify_aud": False},
            )
        except jwt.InvalidSignatureError:
            raise _refuse("signature does not verify with the registered key") from None
        except jwt.PyJWTError as exc:
            raise _refuse(f"cannot be verified ({exc})") from None

        # aud: the token endpoint's URL or the issuer.
        self._check_audience(claims.get("aud"), issuer, endpoint)
        exp = self._check_times(claims)

        # jti: present, and not seen for this client before its exp (durably, in every process).
        jti = claims.get("jti")
        if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
            raise _refuse(f"jti is missing (a string of at most {MAX_JTI_LENGTH} characters)")
        if not storable_text(jti):
            raise _refuse("jti may not contain U+0000 or a lone surrogate (it is stored)")
        fresh = await self.store.remember_once(REPLAY_NAMESPACE, f"{client.id}\n{jti}", exp, now=self.clock())
        if not fresh:
            raise _refuse("jti was already used (a replayed assertion)", replayed=True)
        return client

    async def _key(self, client: Client, header: dict[str, Any], alg: str) -> Any:
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _refuse("kid must be a string")
        jku = header.get("jku")
        if jku is not None and jku != client.jwks_uri:
            raise _refuse("jku does not equal the client's registered jwks_uri")
        keys = list(client.jwks or ())
        if client.jwks_uri is not None and not _select(keys, kid, alg):
            try:
                keys += await self.fetcher.keys(client.id, client.jwks_uri, kid)
            except JwksUnavailable as problem:
                raise _refuse(f"the client's keys could not be fetched: {problem}") from None
        candidates = _select(keys, kid, alg)
        if kid is None and len(candidates) > 1:
            raise _refuse(f"no kid, and the client has {len(candidates)} keys that fit {alg}; send a kid")
        if not candidates:
            named = f"kid {kid!r}" if kid is not None else "no kid"
            raise _refuse(f"no registered key with {named} fits alg {alg}")
        return public_key(candidates[0], alg)

    @staticmethod
    def _check_audience(aud: Any, issuer: str, endpoint: str | None) -> None:
        audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
        # The token endpoint (RFC 7523 §3), the issuer, or the endpoint called (introspection, revocation).
        accepted = (issuer + TOKEN_PATH, issuer, endpoint or issuer)
        if not any(isinstance(value, str) and value in accepted for value in audiences):
            raise _refuse(f"aud must contain the token endpoint URL {issuer + TOKEN_PATH}")

    def _check_times(self, claims: dict[str, Any]) -> float:
        now = self.clock()
        exp: Any = claims.get("exp")
        if not _is_number(exp):
            raise _refuse("exp is missing")
        if exp <= now:
            raise _refuse("exp has passed (the assertion expired)")
        if exp > now + MAX_LIFETIME:
            raise _refuse(f"exp is more than {MAX_LIFETIME} s in the future")
        for name in ("nbf", "iat"):
            value: Any = claims.get(name)
            if value is None:
                continue
            if not _is_number(value):
                raise _refuse(f"{name} must be a number")
            if value > now + MAX_SKEW:
                raise _refuse(f"{name} is more than {MAX_SKEW} s in the future")
        return float(exp)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def _select(keys: list[dict[str, Any]], kid: str | None, alg: str) -> list[dict[str, Any]]:
    """The keys that ``kid`` names (all, with no kid) and that can make an ``alg`` signature."""
    return [key for key in keys if (kid is None or key.get("kid") == kid) and fits(alg, key)]
