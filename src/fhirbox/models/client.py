"""A ``Client``: a machine client of the API and of the OAuth server.

Its shape (Aidbox's): ``secret`` (kept as a scrypt hash, never shown), ``grant_types``, ``active``,
``scope`` (what it may be granted; SMART ``system/`` scopes may use wildcards, see
``oauth/smart_scopes.py``), ``auth.client_credentials`` (token format, lifetimes, refresh tokens,
audiences, client assertion types) and the public keys of its client assertions (RFC 7523): ``jwks``
(an inline JWK Set) or ``jwks_uri`` (where the set is served).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from fhirbox.http.errors import HttpError
from fhirbox.models.jwk_set import InvalidJwkSet, check_jwk_set
from fhirbox.oauth.smart_scopes import (
    MAX_SCOPE_LENGTH,
    MAX_SCOPES,
    InvalidSmartScope,
    is_smart_scope,
    parse_smart_scope,
)
from fhirbox.regex import UnsupportedRegex, compile_fullmatch
from fhirbox.storage.base import Stored

CLIENT = "Client"
HIDDEN_FIELDS = ("secret",)

# The grant types a Client may list (Aidbox's vocabulary); the token endpoint serves only some of them.
KNOWN_GRANT_TYPES = frozenset(
    {
        "basic",
        "authorization_code",
        "code",
        "password",
        "client_credentials",
        "implicit",
        "refresh_token",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    }
)
# RFC 7523 §2.2: the client assertion type of a JWT signed with the client's key (private_key_jwt).
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
KNOWN_ASSERTION_TYPES = frozenset({JWT_BEARER})
MAX_JWKS_URI_LENGTH = 2048
_EXPIRATIONS = ("access_token_expiration", "token_expiration", "refresh_token_expiration")


def compile_audience(pattern: str) -> Callable[[str], bool]:
    """The full-match test of a ``#``-prefixed allowed audience (RE2, compiled once and cached)."""
    return compile_fullmatch(pattern[1:])


@lru_cache(maxsize=1024)
def _audience_matcher(pattern: str) -> Callable[[str], bool]:
    """As ``compile_audience``, but an entry stored before it was refused matches nothing."""
    try:
        return compile_audience(pattern)
    except UnsupportedRegex:
        return lambda value: False


@dataclass(frozen=True, slots=True)
class ClientCredentialsSettings:
    """``auth.client_credentials`` of a Client, with defaults applied."""

    jwt: bool
    access_token_expiration: int
    refresh_token: bool
    refresh_token_expiration: int | None
    audience: tuple[str, ...] | None
    scope: tuple[str, ...] | None
    client_assertion_types: tuple[str, ...] = ()

    def allows_audience(self, value: str) -> bool:
        """True when no allow-list is set, or ``value`` equals an entry or fully matches a ``#regex``."""
        if self.audience is None:
            return True
        for allowed in self.audience:
            if allowed.startswith("#"):
                if _audience_matcher(allowed)(value):
                    return True
            elif allowed == value:
                return True
        return False


def client_credentials_of(body: dict[str, Any], default_expiration: int) -> ClientCredentialsSettings:
    """``auth.client_credentials`` of a Client body, with ``default_expiration`` for an unset lifetime."""
    auth = body.get("auth")
    config = auth.get("client_credentials") if isinstance(auth, dict) else None
    if not isinstance(config, dict):
        config = {}
    # The guide's table names token_expiration; access_token_expiration wins when both are set.
    lifetime = config.get("access_token_expiration") or config.get("token_expiration")
    audience = config.get("audience")
    scope = body.get("scope")
    assertion_types = config.get("client_assertion_types")
    return ClientCredentialsSettings(
        jwt=config.get("token_format") == "jwt",
        access_token_expiration=lifetime if isinstance(lifetime, int) else default_expiration,
        refresh_token=config.get("refresh_token") is True,
        refresh_token_expiration=config.get("refresh_token_expiration"),
        audience=tuple(audience) if isinstance(audience, list) else None,
        scope=tuple(scope) if isinstance(scope, list) else None,
        client_assertion_types=tuple(assertion_types) if isinstance(assertion_types, list) else (),
    )


class Client:
    """A stored Client and the rules that read it."""

    __slots__ = ("_credentials", "stored")

    def __init__(self, stored: Stored) -> None:
        self.stored = stored
        # ``client_credentials`` as last read (a Client is one stored version: it never changes).
        self._credentials: tuple[int, ClientCredentialsSettings] | None = None

    @property
    def id(self) -> str:
        return self.stored.id

    @property
    def body(self) -> dict[str, Any]:
        return self.stored.body

    @property
    def version(self) -> int:
        return self.stored.version

    @property
    def is_active(self) -> bool:
        """False when deleted or deactivated (``active: false``)."""
        return not self.stored.deleted and self.body.get("active") is not False

    @property
    def secret_hash(self) -> str | None:
        hashed = self.body.get("secret")
        return hashed if isinstance(hashed, str) else None

    @property
    def jwks(self) -> list[dict[str, Any]] | None:
        """The keys of the inline ``jwks``, or None."""
        jwks = self.body.get("jwks")
        keys = jwks.get("keys") if isinstance(jwks, dict) else None
        return keys if isinstance(keys, list) else None

    @property
    def jwks_uri(self) -> str | None:
        uri = self.body.get("jwks_uri")
        return uri if isinstance(uri, str) else None

    @property
    def accepts_jwt_assertion(self) -> bool:
        """Whether ``auth.client_credentials.client_assertion_types`` enables private_key_jwt."""
        return JWT_BEARER in client_credentials_of(self.body, 0).client_assertion_types

    def allows_grant(self, grant_type: str) -> bool:
        """Whether ``grant_type`` (``basic`` for API calls with Basic credentials) is in ``grant_types``."""
        grant_types = self.body.get("grant_types")
        return isinstance(grant_types, list) and grant_type in grant_types

    @property
    def is_smart_scoped(self) -> bool:
        """Whether ``scope`` holds a SMART ``system/`` scope: then SMART scopes limit every token of
        this client, and its secret alone (the console) acts only where Basic is allowed."""
        scope = self.body.get("scope")
        return isinstance(scope, list) and any(isinstance(s, str) and is_smart_scope(s) for s in scope)

    def client_credentials(self, default_expiration: int) -> ClientCredentialsSettings:
        """``auth.client_credentials`` with ``default_expiration`` for an unset token lifetime."""
        cached = self._credentials
        if cached is not None and cached[0] == default_expiration:
            return cached[1]
        settings = client_credentials_of(self.body, default_expiration)
        self._credentials = (default_expiration, settings)
        return settings

    def public_view(self) -> dict[str, Any]:
        """The Client without its secret hash."""
        return {key: value for key, value in self.body.items() if key not in HIDDEN_FIELDS}

    @staticmethod
    def validate(body: dict[str, Any]) -> None:
        """Refuse (422, naming the field) a Client body the server could not act on."""
        grant_types = body.get("grant_types", [])
        if not isinstance(grant_types, list) or not all(isinstance(g, str) for g in grant_types):
            raise HttpError(422, "grant_types must be a list of strings")
        for grant in grant_types:
            if grant not in KNOWN_GRANT_TYPES:
                known = ", ".join(sorted(KNOWN_GRANT_TYPES))
                raise _invalid("grant_types", f"has unknown grant type {grant!r}; known: {known}")
        if "active" in body and not isinstance(body["active"], bool):
            raise HttpError(422, "active must be true or false")
        scope = body.get("scope")
        if scope is not None and (
            not isinstance(scope, list) or not all(isinstance(s, str) and s and " " not in s for s in scope)
        ):
            raise _invalid("scope", "must be a list of scope strings without spaces")
        _validate_scope(scope or [])
        _validate_auth(body.get("auth"))
        secret = body.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise HttpError(422, "secret must be a non-empty string")
        _validate_keys(body)


def _validate_keys(body: dict[str, Any]) -> None:
    """``jwks`` and ``jwks_uri``: public keys only, each usable; a URL fhirbox can fetch."""
    if "jwks" in body:
        try:
            check_jwk_set(body["jwks"])
        except InvalidJwkSet as problem:
            raise _invalid("jwks", str(problem)) from None
    if "jwks_uri" in body:
        uri = body["jwks_uri"]
        if not isinstance(uri, str) or not _is_http_url(uri):
            raise _invalid(
                "jwks_uri",
                f"must be an absolute https:// (or http://) URL without a fragment, of at most "
                f"{MAX_JWKS_URI_LENGTH} characters",
            )
    if JWT_BEARER in client_credentials_of(body, 0).client_assertion_types and not (
        "jwks" in body or "jwks_uri" in body
    ):
        raise _invalid(
            "auth.client_credentials.client_assertion_types",
            "enables private_key_jwt, but the Client has no jwks or jwks_uri to verify assertions with",
        )


def _is_http_url(uri: str) -> bool:
    if len(uri) > MAX_JWKS_URI_LENGTH or not uri.isascii() or any(c.isspace() for c in uri):
        return False
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not parts.fragment


def _validate_scope(scope: list[str]) -> None:
    if len(scope) > MAX_SCOPES:
        raise _invalid("scope", f"has more than {MAX_SCOPES} scopes")
    for entry in scope:
        if len(entry) > MAX_SCOPE_LENGTH:
            raise _invalid("scope", f"has a scope longer than {MAX_SCOPE_LENGTH} characters")
        if is_smart_scope(entry):
            try:
                parse_smart_scope(entry)
            except InvalidSmartScope as exc:
                raise _invalid("scope", f"has an invalid SMART scope: {exc}") from None


def _invalid(field: str, problem: str) -> HttpError:
    return HttpError(422, f"Client.{field} {problem}")


def _validate_auth(auth: Any) -> None:
    if auth is None:
        return
    if not isinstance(auth, dict):
        raise _invalid("auth", "must be an object")
    config = auth.get("client_credentials")
    if config is None:
        return
    field = "auth.client_credentials"
    if not isinstance(config, dict):
        raise _invalid(field, "must be an object")
    token_format = config.get("token_format")
    if token_format is not None and token_format != "jwt":  # noqa: S105 - a format name, not a secret
        raise _invalid(f"{field}.token_format", f"must be 'jwt' or absent (opaque), not {token_format!r}")
    for name in _EXPIRATIONS:
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise _invalid(f"{field}.{name}", f"must be a positive integer number of seconds, not {value!r}")
    refresh = config.get("refresh_token")
    if refresh is not None and not isinstance(refresh, bool):
        raise _invalid(f"{field}.refresh_token", "must be true or false")
    assertion_types = config.get("client_assertion_types")
    if assertion_types is not None:
        if not isinstance(assertion_types, list) or not all(isinstance(t, str) for t in assertion_types):
            raise _invalid(f"{field}.client_assertion_types", "must be a list of strings")
        for kind in assertion_types:
            if kind not in KNOWN_ASSERTION_TYPES:
                raise _invalid(
                    f"{field}.client_assertion_types", f"has unknown type {kind!r}; known: {JWT_BEARER}"
                )
    _validate_audience(config.get("audience"), f"{field}.audience")


def _validate_audience(audience: Any, field: str) -> None:
    if audience is None:
        return
    if not isinstance(audience, list) or not all(isinstance(a, str) and a for a in audience):
        raise _invalid(field, "must be a list of non-empty strings")
    for allowed in audience:
        if allowed.startswith("#"):
            try:
                compile_audience(allowed)
            except UnsupportedRegex as exc:
                raise _invalid(field, f"has an invalid regular expression {allowed!r}: {exc}") from None
