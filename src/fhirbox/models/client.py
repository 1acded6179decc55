"""A ``Client``: a machine client of the API and of the OAuth server.

Its shape (Aidbox's): ``secret`` (kept as a scrypt hash, never shown), ``grant_types``, ``active``,
``scope`` and ``auth.client_credentials`` (token format, lifetimes, refresh tokens, audiences).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhirbox.http.errors import HttpError
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
    return ClientCredentialsSettings(
        jwt=config.get("token_format") == "jwt",
        access_token_expiration=lifetime if isinstance(lifetime, int) else default_expiration,
        refresh_token=config.get("refresh_token") is True,
        refresh_token_expiration=config.get("refresh_token_expiration"),
        audience=tuple(audience) if isinstance(audience, list) else None,
        scope=tuple(scope) if isinstance(scope, list) else None,
    )


class Client:
    """A stored Client and the rules that read it."""

    __slots__ = ("stored",)

    def __init__(self, stored: Stored) -> None:
        self.stored = stored

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

    def allows_grant(self, grant_type: str) -> bool:
        """Whether ``grant_type`` (``basic`` for API calls with Basic credentials) is in ``grant_types``."""
        grant_types = self.body.get("grant_types")
        return isinstance(grant_types, list) and grant_type in grant_types

    def client_credentials(self, default_expiration: int) -> ClientCredentialsSettings:
        """``auth.client_credentials`` with ``default_expiration`` for an unset token lifetime."""
        return client_credentials_of(self.body, default_expiration)

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
        _validate_auth(body.get("auth"))
        secret = body.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise HttpError(422, "secret must be a non-empty string")


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
