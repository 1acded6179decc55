"""The client credentials grant (RFC 6749 §4.4), with scope (§3.3) and audience/resource (RFC 8707)."""

from __future__ import annotations

from typing import Any

from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.models.audit_event import TOKEN_ISSUED, Agent, Entity
from fhirbox.models.client import Client, ClientCredentialsSettings
from fhirbox.models.session import SESSION, Session
from fhirbox.oauth.client_auth import OAuthRequest
from fhirbox.oauth.errors import (
    InvalidClient,
    InvalidRequest,
    InvalidScope,
    InvalidTarget,
    UnauthorizedClient,
)
from fhirbox.oauth.grants import Issuance, IssuingGrant
from fhirbox.oauth.issuance import issue_tokens, token_response
from fhirbox.oauth.sessions import close_session
from fhirbox.oauth.smart_scopes import InvalidSmartScope, granted_scopes
from fhirbox.oauth.token_formats import new_session_id
from fhirbox.storage.base import Stored


def granted_scope(allowed: tuple[str, ...] | None, requested: str | None) -> list[str] | None:
    """The requested scope if the client may have all of it (SMART ``system/`` scopes when one of the
    client's scopes covers them, others when listed as they are); the client's whole list if none
    asked."""
    if requested is None:
        return list(allowed) if allowed else None
    wanted = requested.split()
    if not wanted:
        raise InvalidRequest("scope is empty")
    if allowed is None:
        raise InvalidScope("This client has no scopes to grant")
    try:
        return granted_scopes(allowed, wanted)
    except InvalidSmartScope as exc:
        raise InvalidScope(f"Invalid scope: {exc}") from None
    except LookupError as missing:
        raise InvalidScope(f"Scope not allowed for this client: {missing.args[0]}") from None


def requested_audience(request: OAuthRequest, config: ClientCredentialsSettings) -> str | None:
    """The audience asked for by ``audience`` (the guide) or ``resource`` (RFC 8707): one value."""
    audience, resource = request.get("audience"), request.get("resource")
    if audience is not None and resource is not None and audience != resource:
        raise InvalidRequest("Send audience or resource, not two different values")
    if resource is not None and ("://" not in resource or "#" in resource):
        raise InvalidTarget("resource must be an absolute URI without a fragment (RFC 8707)")
    value = audience or resource
    if value is not None and not config.allows_audience(value):
        raise InvalidTarget(f"Audience {value!r} is not allowed for this client")
    return value


class ClientCredentialsGrant(IssuingGrant):
    def __init__(self, issuance: Issuance, clients: ClientDirectory) -> None:
        super().__init__(issuance)
        self.clients = clients

    async def __call__(self, client: Client, request: OAuthRequest) -> dict[str, Any]:
        if not client.allows_grant("client_credentials"):
            raise UnauthorizedClient("This client may not use the client_credentials grant")
        config = client.client_credentials(self.default_expiration)
        scope = granted_scope(config.scope, request.get("scope"))
        audience = requested_audience(request, config)

        now = int(self.clock())
        session_id = new_session_id()
        tokens = issue_tokens(
            self.jwts,
            config,
            session_id=session_id,
            client_id=client.id,
            now=now,
            audience=audience,
            scope=scope,
            issuer=request.issuer,
        )
        session = Session.new(
            session_id=session_id,
            client_id=client.id,
            issuer=request.issuer,
            now=now,
            audience=audience,
            scope=scope,
            tokens=tokens.hashes(),
            retention=self.retention,
            auth_method=request.auth_method,
        )

        def create(current: Stored | None) -> dict[str, Any]:
            if current is not None:
                raise RuntimeError(f"Session id collision on {session_id}")
            return session.body

        agent = Agent(client.id, request.client_addr)
        details = [("grant", "client_credentials"), ("format", "jwt" if config.jwt else "opaque")]
        details += [("scope", " ".join(scope))] if scope else []
        details += [("audience", audience)] if audience else []
        issued = self.audit.event(
            TOKEN_ISSUED,
            action="C",
            agent=agent,
            entities=(Entity(f"{SESSION}/{session_id}", tuple(details)),),
        )
        # Answered only after the Session (and its audit record) is committed: the token works as
        # soon as the client has it, and every token the client has was recorded.
        result = await self.store.mutate(
            SESSION, session_id, create, attach=self.audit.attach(if_changed=[issued])
        )
        assert result.after is not None
        await self._client_unchanged(client, session_id, request, agent)
        self.sessions.put(result.after)
        return token_response(tokens, now, scope)

    async def _client_unchanged(
        self, client: Client, session_id: str, request: OAuthRequest, agent: Agent
    ) -> None:
        """Close the new Session when the Client changed while it was being issued (e.g. deactivated
        and re-activated while its secret was hashed): its Session sweep may have run before this
        Session existed, and a token must never outlive the Client version it was issued under."""
        current = await self.clients.get(client.id)
        if current is not None and current.version == client.version:
            return
        reason = "client changed while the token was issued"
        await close_session(
            self.store,
            session_id,
            reason,
            now=self.clock(),
            retention=self.retention,
            attach=self.audit.closing(agent, reason)(session_id),
        )
        raise InvalidClient(f"The {reason}; request a new token", tried_basic=request.tried_basic)
