"""RFC 7662 token introspection: ``POST /auth/introspect``.

The caller authenticates as a client, as at the token endpoint (Basic, ``client_secret_post`` or
``private_key_jwt``), and sends ``token`` (``token_type_hint`` is optional and, as §2.1 allows, only
a hint: both kinds are looked up). An active token the caller may see is described; anything else is
exactly ``{"active": false}`` (§2.2), so the answer never tells why. A client may see its own tokens,
the root client every token, and another client others' tokens only when an AccessPolicy allows it
the request ``POST /auth/introspect``. Access tokens are checked exactly as ``BearerAuth`` checks them
(the Session cache, and a JWT's signature verified once per process).
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.clock import Clock
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, json_response
from fhirbox.models.client import Client
from fhirbox.models.session import Session
from fhirbox.oauth.bearer import BearerAuth
from fhirbox.oauth.client_auth import ClientAuthentication, read_oauth_request
from fhirbox.oauth.errors import NO_STORE, InvalidRequest, OAuthError
from fhirbox.oauth.sessions import SessionCache
from fhirbox.oauth.token_formats import InvalidToken, session_id_of, token_hash
from fhirbox.policy.authorizer import PolicyAuthorizer

INACTIVE: dict[str, Any] = {"active": False}
MAX_TOKEN_LENGTH = 16 * 1024


class Introspection:
    def __init__(
        self,
        client_auth: ClientAuthentication,
        clients: ClientDirectory,
        sessions: SessionCache,
        bearer: BearerAuth,
        authorizer: PolicyAuthorizer,
        root_client_id: str,
        clock: Clock,
    ) -> None:
        self.client_auth = client_auth
        self.clients = clients
        self.sessions = sessions
        self.bearer = bearer
        self.authorizer = authorizer
        self.root_client_id = root_client_id
        self.clock = clock

    async def handle(self, request: Request, principal: Principal | None) -> Response:
        try:
            oauth = await read_oauth_request(request)
            caller = await self.client_auth.authenticate(oauth)
            request.client_id = caller.id
            token = oauth.get("token")
            if token is None:
                raise InvalidRequest("token is required")
        except OAuthError as error:
            return error.response()
        described = await self.describe(token, request.base_url)
        if described is not None and not await self.may_see(request, caller, described["client_id"]):
            described = None
        return json_response(200, described if described is not None else INACTIVE, dict(NO_STORE))

    async def describe(self, token: str, base_url: str) -> dict[str, Any] | None:
        """What RFC 7662 §2.2 says of an active access or refresh token; None when it is not active."""
        if len(token) > MAX_TOKEN_LENGTH:
            return None
        try:
            entry, client, claims = await self.bearer.resolve(token, base_url)
        except InvalidToken:
            return await self._describe_refresh(token)
        session = entry.session
        exp = claims["exp"] if claims is not None else session.body.get("exp")
        iat = claims["iat"] if claims is not None else _issued_at(session)
        # A JWT's own jti (unique per issuance); an opaque token is named by its Session.
        jti = claims.get("jti") if claims is not None else None
        return _description(session, client, exp, iat, "Bearer", jti=jti)

    async def _describe_refresh(self, token: str) -> dict[str, Any] | None:
        session_id = session_id_of(token)
        entry = await self.sessions.get(session_id) if session_id else None
        if entry is None:
            return None
        session = entry.session
        if not session.holds_refresh(token_hash(token)) or not session.active:
            return None
        if session.refresh_expired(self.clock()):
            return None
        client_id = session.client_id
        client = await self.clients.get(client_id) if client_id is not None else None
        if client is None:
            return None
        return _description(
            session, client, session.body.get("refresh_token_exp"), _issued_at(session), "refresh_token"
        )

    async def may_see(self, request: Request, caller: Client, owner: str) -> bool:
        """Own tokens always; root any; another client's only when an AccessPolicy allows the caller
        this request (``POST /auth/introspect``, the usual request object)."""
        if caller.id == owner or caller.id == self.root_client_id:
            return True
        principal = Principal(client_id=caller.id, client=caller.body)
        return (await self.authorizer.decide(request, principal)).allowed


def _issued_at(session: Session) -> int | None:
    """When the Session's current tokens were issued: its last refresh, else its start."""
    last = session.body.get("last_refresh")
    if isinstance(last, int | float):
        return int(last)
    start = session.body.get("start")
    return _seconds(start) if isinstance(start, str) else None


@functools.lru_cache(maxsize=4096)
def _seconds(instant: str) -> int | None:
    """``instant`` (ISO 8601) in seconds since the epoch; None when it is not one."""
    try:
        return int(datetime.fromisoformat(instant).timestamp())
    except ValueError:
        return None


def _description(
    session: Session, client: Client, exp: Any, iat: Any, token_type: str, *, jti: Any = None
) -> dict[str, Any]:
    issuer = session.body.get("iss")
    answer: dict[str, Any] = {
        "active": True,
        "scope": " ".join(session.scope or ()),
        "client_id": client.id,
        "sub": client.id,
        "exp": exp,
        "iat": iat,
        "iss": issuer,
        # RFC 9068 §2.2: a token requested for no audience is meant for the issuer itself.
        "aud": session.audience or issuer,
        "jti": jti if isinstance(jti, str) else session.id,
        "token_type": token_type,
    }
    return {key: value for key, value in answer.items() if value is not None and value != ""}
