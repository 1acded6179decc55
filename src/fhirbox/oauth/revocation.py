"""Closing Sessions: ``DELETE /Session`` with the token itself, and RFC 7009 ``POST /auth/revoke``."""

from __future__ import annotations

import hmac
from typing import Any

from fhirbox.auth.clients import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, empty, render
from fhirbox.oauth.endpoint import authenticate_client, read_oauth_request
from fhirbox.oauth.errors import NO_STORE, InvalidRequest, OAuthError, UnauthorizedClient
from fhirbox.oauth.sessions import SESSION, closed, public_view
from fhirbox.oauth.tokens import session_id_of, token_hash
from fhirbox.storage.base import UNCHANGED, Store, Stored


class Revocation:
    def __init__(self, store: Store, clients: ClientDirectory, retention: int) -> None:
        self.store = store
        self.clients = clients
        self.retention = retention

    async def close(self, session_id: str, reason: str, token: str | None = None) -> Stored | None:
        """Close an active Session (when ``token`` is given, only if it is one of its tokens)."""
        presented = token_hash(token) if token is not None else None

        def end(current: Stored | None) -> dict[str, Any] | Any:
            if current is None or current.deleted:
                return UNCHANGED
            body = current.body
            if presented is not None and not holds(body, presented):
                return UNCHANGED
            if body.get("active") is not True:
                return UNCHANGED
            return closed(body, self.retention, reason)

        result = await self.store.mutate(SESSION, session_id, end)
        return result.after

    async def delete_session(self, request: Request, principal: Principal | None) -> Response:
        """``DELETE /Session``: close the Session of the bearer token that authenticates the call."""
        if principal is None or principal.session is None:
            raise HttpError(400, "DELETE /Session closes the session of the Bearer token it is called with")
        after = await self.close(principal.session["id"], "closed by DELETE /Session")
        if after is None:
            raise HttpError(404, "Session not found")
        return render(request, 200, public_view(after.body))

    async def revoke(self, request: Request, principal: Principal | None) -> Response:
        """RFC 7009: revoke an access or refresh token of the authenticated client; always 200."""
        try:
            oauth = await read_oauth_request(request)
            client = await authenticate_client(self.clients, oauth)
            token = oauth.get("token")
            if token is None:
                raise InvalidRequest("token is required")
        except OAuthError as error:
            return error.response()
        session_id = session_id_of(token)
        stored = await self.store.read(SESSION, session_id) if session_id is not None else None
        # An unknown or invalid token is not an error (RFC 7009 §2.2): the client cannot act on it.
        if stored is not None and session_id is not None and holds(stored.body, token_hash(token)):
            if stored.body.get("client", {}).get("id") != client.id:
                # RFC 7009 §2.1: only the client a token was issued to may revoke it.
                return UnauthorizedClient("The token was issued to another client").response()
            await self.close(session_id, "revoked by POST /auth/revoke", token)
        return empty(200, dict(NO_STORE))


def holds(session: dict[str, Any], hashed: str) -> bool:
    """True when ``hashed`` is the hash of the Session's current access or refresh token."""
    return any(
        isinstance(session.get(name), str) and hmac.compare_digest(session[name], hashed)
        for name in ("access_token", "refresh_token")
    )
