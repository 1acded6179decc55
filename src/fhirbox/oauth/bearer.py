"""Bearer authentication of API calls (RFC 6750) with fhirbox's own opaque and JWT access tokens.

Both kinds are accepted only while their Session is active and still holds the token's hash, so a
closed Session stops its tokens at once, JWTs included. Sessions come from the in-process
``SessionCache``; a JWT's signature is verified once per process and its claims kept with the Session.
"""

from __future__ import annotations

import hmac
import time

from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.clients import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.oauth.sessions import SessionCache
from fhirbox.oauth.tokens import InvalidToken, JwtTokens, is_jwt, session_id_of, token_hash


def _challenge(realm: str, description: str) -> str:
    safe = description.replace('"', "'")
    return f'Bearer realm="{realm}", error="invalid_token", error_description="{safe}"'


def install_bearer(
    authenticator: Authenticator,
    clients: ClientDirectory,
    sessions: SessionCache,
    jwts: JwtTokens,
    root_client_id: str,
) -> None:
    """Register the ``bearer`` scheme: a token of an active Session authenticates its client."""
    realm = authenticator.realm

    def invalid(description: str) -> HttpError:
        return authenticator.unauthorized(description, _challenge(realm, description))

    async def verify(credentials: str, request: Request) -> Principal:
        token = credentials
        session_id = session_id_of(token) if token else None
        entry = await sessions.get(session_id) if session_id else None
        if entry is None:
            raise invalid("Unknown access token")
        session = entry.body
        hashed = token_hash(token)
        stored_hash = session.get("access_token")
        if not isinstance(stored_hash, str) or not hmac.compare_digest(stored_hash, hashed):
            raise invalid("Unknown access token")
        if session.get("active") is not True:
            raise invalid("The session of this token was closed")
        if session.get("exp", 0) <= time.time():
            raise invalid("Access token expired")
        claims = None
        if is_jwt(token):
            if entry.verified_hash != hashed:
                try:
                    entry.claims = await jwts.verify_access_token(token)
                except InvalidToken as exc:
                    raise invalid(str(exc)) from None
                entry.verified_hash = hashed
            claims = entry.claims
        client_id = session.get("client", {}).get("id")
        client = await clients.get(client_id) if isinstance(client_id, str) else None
        if client is None:
            raise invalid("The client of this token is inactive or deleted")
        return Principal(
            client_id=client.id,
            client=client.body,
            is_root=client.id == root_client_id,
            session=entry.public(),
            jwt=claims,
            scope=tuple(session.get("scope", ())),
        )

    authenticator.register("bearer", verify, f'Bearer realm="{realm}"')
