"""A Client's OAuth settings: how they are read for a grant, and the checks run before a Client write."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from fhirbox.http.errors import HttpError

GRANT_TYPES = frozenset(
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


@lru_cache(maxsize=1024)
def compile_audience(pattern: str) -> re.Pattern[str]:
    """The regular expression of a ``#``-prefixed allowed audience."""
    return re.compile(pattern[1:])


@dataclass(frozen=True, slots=True)
class ClientCredentialsSettings:
    """``auth.client_credentials`` of a Client, with defaults applied."""

    jwt: bool
    access_token_expiration: int
    refresh_token: bool
    refresh_token_expiration: int | None
    audience: tuple[str, ...] | None
    scope: tuple[str, ...] | None

    @classmethod
    def of(cls, client: dict[str, Any], default_expiration: int) -> ClientCredentialsSettings:
        auth = client.get("auth")
        config = auth.get("client_credentials") if isinstance(auth, dict) else None
        if not isinstance(config, dict):
            config = {}
        # The guide's table names token_expiration; access_token_expiration wins when both are set.
        lifetime = config.get("access_token_expiration") or config.get("token_expiration")
        audience = config.get("audience")
        scope = client.get("scope")
        return cls(
            jwt=config.get("token_format") == "jwt",
            access_token_expiration=lifetime if isinstance(lifetime, int) else default_expiration,
            refresh_token=config.get("refresh_token") is True,
            refresh_token_expiration=config.get("refresh_token_expiration"),
            audience=tuple(audience) if isinstance(audience, list) else None,
            scope=tuple(scope) if isinstance(scope, list) else None,
        )

    def allows_audience(self, value: str) -> bool:
        """True when no allow-list is set, or ``value`` equals an entry or fully matches a ``#regex``."""
        if self.audience is None:
            return True
        for allowed in self.audience:
            if allowed.startswith("#"):
                if compile_audience(allowed).fullmatch(value):
                    return True
            elif allowed == value:
                return True
        return False


def _fail(field: str, problem: str) -> HttpError:
    return HttpError(422, f"Client.{field} {problem}")


def check_client_oauth_settings(body: dict[str, Any]) -> None:
    """Refuse (422, naming the field) unknown grant types, token formats and bad expirations."""
    for grant in body.get("grant_types") or ():
        if grant not in GRANT_TYPES:
            raise _fail(
                "grant_types", f"has unknown grant type {grant!r}; known: {', '.join(sorted(GRANT_TYPES))}"
            )
    scope = body.get("scope")
    if scope is not None and (
        not isinstance(scope, list) or not all(isinstance(s, str) and s and " " not in s for s in scope)
    ):
        raise _fail("scope", "must be a list of scope strings without spaces")
    auth = body.get("auth")
    if auth is None:
        return
    if not isinstance(auth, dict):
        raise _fail("auth", "must be an object")
    config = auth.get("client_credentials")
    if config is None:
        return
    if not isinstance(config, dict):
        raise _fail("auth.client_credentials", "must be an object")
    field = "auth.client_credentials"
    token_format = config.get("token_format")
    if token_format is not None and token_format != "jwt":  # noqa: S105 - a format name, not a secret
        raise _fail(f"{field}.token_format", f"must be 'jwt' or absent (opaque), not {token_format!r}")
    for name in _EXPIRATIONS:
        value = config.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
            raise _fail(f"{field}.{name}", f"must be a positive integer number of seconds, not {value!r}")
    refresh = config.get("refresh_token")
    if refresh is not None and not isinstance(refresh, bool):
        raise _fail(f"{field}.refresh_token", "must be true or false")
    audience = config.get("audience")
    if audience is not None:
        if not isinstance(audience, list) or not all(isinstance(a, str) and a for a in audience):
            raise _fail(f"{field}.audience", "must be a list of non-empty strings")
        for allowed in audience:
            if allowed.startswith("#"):
                try:
                    compile_audience(allowed)
                except re.error as exc:
                    raise _fail(
                        f"{field}.audience", f"has an invalid regular expression {allowed!r}: {exc}"
                    ) from None
