"""Bearer authentication of API calls (RFC 6750) with fhirbox's own opaque and JWT access tokens.

Both kinds are accepted only while their Session is active and still holds the token's hash, so a
closed Session stops its tokens at once, JWTs included. Sessions come from the in-process
``SessionCache``; a JWT's signature is verified once per process and its claims kept with the Session.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from fhirbox.auth.authenticate import REALM, unauthorized
from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.clock import Clock
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.models.client import Client
from fhirbox.oauth.errors import safe_description
from fhirbox.oauth.sessions import CachedSession, SessionCache
from fhirbox.oauth.smart_scopes import holds_smart_scope
from fhirbox.oauth.token_formats import InvalidToken, JwtTokens, is_jwt, session_id_of, token_hash


def invalid_token(description: str) -> HttpError:
    """RFC 6750 §3.1: 401 with ``error="invalid_token"`` in the challenge."""
    safe = safe_description(description)
    challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{safe}"'
    return unauthorized(description, challenge)


def invalid_request(description: str) -> HttpError:
    """RFC 6750 §3.1: a malformed bearer credential is 400 with ``error="invalid_request"``."""
    safe = safe_description(description)
    challenge = f'Bearer realm="{REALM}", error="invalid_request", error_description="{safe}"'
    return HttpError(400, description, headers={"WWW-Authenticate": challenge})


def insufficient_scope(description: str, needed: str | None) -> HttpError:
    """RFC 6750 §3.1: 403 with ``error="insufficient_scope"`` and the ``scope`` that would do."""
    challenge = f'Bearer realm="{REALM}", error="insufficient_scope"'
    if needed:
        challenge += f', scope="{needed}"'
    return HttpError(403, description, headers={"WWW-Authenticate": challenge})


# RFC 6750 §2.1: b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = re.compile(r"^[A-Za-z0-9\-._~+/]+=*\Z")


class BearerAuth:
    """A token of an active Session authenticates the Session's client."""

    name = "bearer"
    challenge = f'Bearer realm="{REALM}"'

    def __init__(
        self,
        clients: ClientDirectory,
        sessions: SessionCache,
        jwts: JwtTokens,
        root_client_id: str,
        clock: Clock,
        count_failure: Callable[[str], None],
    ) -> None:
        self.count_failure = count_failure
        self.clients = clients
        self.sessions = sessions
        self.jwts = jwts
        self.root_client_id = root_client_id
        self.clock = clock

    async def verify(self, credentials: str, request: Request) -> Principal:
        if not _B64TOKEN.match(credentials):
            self.count_failure("invalid_token")
            raise invalid_request(
                "The Bearer credential is missing or malformed (RFC 6750 section 2.1: one token, no spaces)"
            )
        try:
            entry, client, claims = await self.resolve(credentials, request.base_url)
        except InvalidToken as exc:
            self.count_failure("invalid_token")
            raise invalid_token(str(exc)) from None
        scope = tuple(entry.session.scope or ())
        return Principal(
            client_id=client.id,
            client=client.body,
            is_root=client.id == self.root_client_id,
            session=entry.public(),
            jwt=claims,
            scope=scope,
            # A client given SMART scopes is limited by them on every token, even one granted none
            # of them (requested with other scopes only): such a token makes no resource interaction.
            smart_scoped=holds_smart_scope(scope) or client.is_smart_scoped,
        )

    async def resolve(self, token: str, base_url: str) -> tuple[CachedSession, Client, dict[str, Any] | None]:
        """The Session of a current access ``token`` reached through ``base_url``, its live Client and,
        for a JWT, its verified claims; ``InvalidToken`` saying why not. Also what introspection asks."""
        session_id = session_id_of(token) if token else None
        entry = await self.sessions.get(session_id) if session_id else None
        if entry is None:
            raise InvalidToken("Unknown access token")
        session = entry.session
        hashed = token_hash(token)
        if session.is_console or not session.holds_access(hashed):
            raise InvalidToken("Unknown access token")
        if not session.active:
            raise InvalidToken("The session of this token was closed")
        if session.access_expired(self.clock()):
            raise InvalidToken("Access token expired")
        claims = None
        if is_jwt(token):
            if entry.verified_hash != hashed:
                entry.claims = await self.jwts.verify_access_token(token, base_url)
                entry.verified_hash = hashed
            claims = entry.claims
            if claims is None or claims.get("iss") != base_url:
                # Verified before through another base URL (a trusted proxy's other host).
                raise InvalidToken("Invalid JWT: Invalid issuer")
        client_id = session.client_id
        client = await self.clients.get(client_id) if client_id is not None else None
        if client is None:
            raise InvalidToken("The client of this token is inactive or deleted")
        return entry, client, claims
