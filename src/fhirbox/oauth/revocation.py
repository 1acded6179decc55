"""Closing Sessions: ``DELETE /Session`` with the token itself, and RFC 7009 ``POST /auth/revoke``."""

from __future__ import annotations

from fhirbox.audit import Audit
from fhirbox.auth.principal import Principal
from fhirbox.clock import Clock
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, json_response, render
from fhirbox.models.audit_event import SERVER, Agent
from fhirbox.models.client import Client
from fhirbox.models.session import SESSION, Session
from fhirbox.oauth.client_auth import ClientAuthentication, read_oauth_request
from fhirbox.oauth.errors import NO_STORE, InvalidRequest, OAuthError, UnauthorizedClient
from fhirbox.oauth.sessions import close_client_sessions, close_session
from fhirbox.oauth.token_formats import session_id_of, token_hash
from fhirbox.storage.base import Store, Stored


class Revocation:
    def __init__(
        self, store: Store, client_auth: ClientAuthentication, retention: int, clock: Clock, audit: Audit
    ) -> None:
        self.store = store
        self.audit = audit
        self.client_auth = client_auth
        self.retention = retention
        self.clock = clock

    async def close(self, session_id: str, client_id: str | None, address: str) -> Stored | None:
        """``DELETE /Session/{id}`` by ``client_id``: close that Session (its tokens stop at once); None
        if it never was."""
        reason = "closed by DELETE /Session/{id}"
        return await close_session(
            self.store,
            session_id,
            reason,
            now=self.clock(),
            retention=self.retention,
            attach=self.audit.closing(Agent(client_id, address), reason)(session_id),
        )

    async def client_written(self, before: Stored | None, after: Stored) -> None:
        """Closing is final: when a Client is deleted or deactivated its Sessions are closed, and when
        one comes (back) to life, any Session left open from before is closed too, so no token of an
        earlier incarnation of that id ever works again."""
        was_live = before is not None and Client(before).is_active
        is_live = Client(after).is_active
        if was_live and is_live:
            return
        reason = (
            "client deleted"
            if after.deleted
            else "client deactivated"
            if not is_live
            else "client re-created"
        )
        await close_client_sessions(
            self.store,
            after.id,
            reason,
            now=self.clock(),
            retention=self.retention,
            attach=self.audit.closing(SERVER, reason),
        )

    async def delete_session(self, request: Request, principal: Principal | None) -> Response:
        """``DELETE /Session``: close the Session of the bearer token that authenticates the call."""
        if principal is None or principal.session is None:
            raise HttpError(400, "DELETE /Session closes the session of the Bearer token it is called with")
        reason = "closed by DELETE /Session"
        session_id = principal.session["id"]
        after = await close_session(
            self.store,
            session_id,
            reason,
            now=self.clock(),
            retention=self.retention,
            attach=self.audit.closing(Agent(principal.client_id, request.client_addr), reason)(session_id),
        )
        if after is None:
            raise HttpError(404, "Session not found")
        return render(request, 200, Session(after.body).public_view())

    async def revoke(self, request: Request, principal: Principal | None) -> Response:
        """RFC 7009: revoke an access or refresh token of the authenticated client; always 200."""
        try:
            oauth = await read_oauth_request(request)
            client = await self.client_auth.authenticate(oauth)
            request.client_id = client.id
            token = oauth.get("token")
            if token is None:
                raise InvalidRequest("token is required")
        except OAuthError as error:
            return error.response()
        session_id = session_id_of(token)
        stored = await self.store.read(SESSION, session_id) if session_id is not None else None
        hashed = token_hash(token)
        # An unknown or invalid token is not an error (RFC 7009 §2.2): the client cannot act on it.
        session = Session(stored.body) if stored is not None else None
        if session is not None and session_id is not None and session.holds(hashed):
            if session.client_id != client.id:
                # RFC 7009 §2.1: only the client a token was issued to may revoke it.
                return UnauthorizedClient("The token was issued to another client").response()
            reason = "revoked by POST /auth/revoke"
            await close_session(
                self.store,
                session_id,
                reason,
                now=self.clock(),
                retention=self.retention,
                only_holding=hashed,
                attach=self.audit.closing(Agent(client.id, oauth.client_addr), reason)(session_id),
            )
        # RFC 7009 §2.2 lets the body be empty; some clients (simple-oauth2) need it to be JSON.
        return json_response(200, {}, dict(NO_STORE))
