"""Issuing tokens for a Session: what both grants share (formats, lifetimes, the token response)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fhirbox.models.client import ClientCredentialsSettings
from fhirbox.models.session import TokenHashes
from fhirbox.oauth.token_formats import JwtTokens, new_session_id, opaque_token, token_hash


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    access_token: str
    expires_at: int
    refresh_token: str | None
    refresh_expires_at: int | None

    def hashes(self) -> TokenHashes:
        """What the Session keeps of these tokens."""
        refresh_hash = token_hash(self.refresh_token) if self.refresh_token is not None else None
        return TokenHashes(
            token_hash(self.access_token), self.expires_at, refresh_hash, self.refresh_expires_at
        )


def issue_tokens(
    jwts: JwtTokens,
    config: ClientCredentialsSettings,
    *,
    session_id: str,
    client_id: str,
    now: int,
    audience: str | None,
    scope: list[str] | None,
    issuer: str,
) -> IssuedTokens:
    """A new access token (and refresh token when the client has them) for ``session_id``, JWTs with
    ``iss`` = ``issuer``."""
    expires_at = now + config.access_token_expiration
    refresh_expires_at = now + config.refresh_token_expiration if config.refresh_token_expiration else None
    if config.jwt:
        # Every issuance has its own jti (a UUIDv7, like Session ids), so a refresh within the same
        # second never returns the token it replaces.
        jti = new_session_id()
        access = jwts.access_token(
            session_id, client_id, now, expires_at, audience, scope, issuer=issuer, jti=jti
        )
        refresh = (
            jwts.refresh_token(session_id, client_id, now, refresh_expires_at, issuer=issuer, jti=jti)
            if config.refresh_token
            else None
        )
    else:
        access = opaque_token(session_id)
        refresh = opaque_token(session_id) if config.refresh_token else None
    return IssuedTokens(access, expires_at, refresh, refresh_expires_at if refresh else None)


def token_response(tokens: IssuedTokens, now: int, scope: list[str] | None) -> dict[str, Any]:
    """RFC 6749 §5.1: ``expires_in`` is exactly the access token's lifetime."""
    response: dict[str, Any] = {
        "token_type": "Bearer",
        "access_token": tokens.access_token,
        "expires_in": tokens.expires_at - now,
    }
    if tokens.refresh_token is not None:
        response["refresh_token"] = tokens.refresh_token
    if scope:
        response["scope"] = " ".join(scope)
    return response
