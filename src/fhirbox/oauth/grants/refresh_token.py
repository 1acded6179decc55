"""The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14).

Every use returns a new access token for the same Session and a new refresh token; the old refresh
token stops working. Presenting an already-rotated refresh token again means it leaked: the whole
Session is revoked, unless it is the token the last refresh replaced, presented within the reuse grace
(a concurrent refresh that lost the race): that is ``invalid_grant`` and the Session lives on.
``refresh_token_expiration`` counts from the last use.
"""

from __future__ import annotations

from typing import Any, NoReturn

from fhirbox.models.audit_event import (
    REFRESH_TOKEN_REUSED,
    SERIOUS_FAILURE,
    TOKEN_REFRESHED,
    Agent,
    Entity,
)
from fhirbox.models.client import Client
from fhirbox.models.session import SESSION, Session
from fhirbox.oauth.client_auth import OAuthRequest
from fhirbox.oauth.errors import InvalidGrant, InvalidRequest, UnauthorizedClient
from fhirbox.oauth.grants import Issuance, IssuingGrant
from fhirbox.oauth.issuance import IssuedTokens, issue_tokens, token_response
from fhirbox.oauth.sessions import close_session
from fhirbox.oauth.smart_scopes import InvalidSmartScope, granted_scopes
from fhirbox.oauth.token_formats import session_id_of, token_hash
from fhirbox.storage.base import Appended, Stored

REUSED = "Refresh token was already used; the session is revoked"
JUST_ROTATED = "Refresh token was just replaced by a concurrent refresh; use the tokens that request received"


class _Reused(Exception):
    """The presented refresh token was already rotated away."""

    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session


def refreshed_scope(allowed: tuple[str, ...] | None, held: list[str] | None) -> list[str] | None:
    """The scope a refresh grants: never more than the Session was granted (RFC 6749 §6), and never
    more than the client may have now (its ``scope`` narrowed since: what it lost is dropped; none of
    it left is ``invalid_grant``). A Session granted no scope gets what a new token would."""
    if held is None:
        return list(allowed) if allowed else None
    if allowed is None:
        return held
    kept = []
    for scope in held:
        try:
            granted_scopes(allowed, [scope])
        except (InvalidSmartScope, LookupError):
            continue
        kept.append(scope)
    if not kept:
        raise InvalidGrant("This client may no longer have any of this session's scopes")
    return kept


class RefreshTokenGrant(IssuingGrant):
    def __init__(self, issuance: Issuance, *, reuse_grace: int) -> None:
        super().__init__(issuance)
        self.reuse_grace = reuse_grace

    async def __call__(self, client: Client, request: OAuthRequest) -> dict[str, Any]:
        token = request.get("refresh_token")
        if token is None:
            raise InvalidRequest("refresh_token is required")
        if not client.allows_grant("client_credentials"):
            raise UnauthorizedClient("This client may not use the client_credentials grant")
        config = client.client_credentials(self.default_expiration)
        if not config.refresh_token:
            raise UnauthorizedClient("Refresh tokens are not enabled for this client")

        now = int(self.clock())
        presented = token_hash(token)
        agent = Agent(client.id, request.client_addr)
        session = await self._session_of(token, presented, client, now, agent)
        if session.audience is not None and not config.allows_audience(session.audience):
            raise InvalidGrant("This session's audience is no longer allowed for this client")
        scope = refreshed_scope(config.scope, session.scope)
        tokens = issue_tokens(
            self.jwts,
            config,
            session_id=session.id,
            client_id=client.id,
            now=now,
            audience=session.audience,
            scope=scope,
            issuer=request.issuer,
        )
        if tokens.refresh_token is None:
            raise UnauthorizedClient("Refresh tokens are not enabled for this client")
        refreshed = self.audit.event(
            TOKEN_REFRESHED,
            action="U",
            agent=agent,
            entities=(
                Entity(
                    f"{SESSION}/{session.id}",
                    (("grant", "refresh_token"), ("format", "jwt" if config.jwt else "opaque")),
                ),
            ),
        )
        await self._rotate(session.id, presented, tokens, scope, agent, refreshed)
        return token_response(tokens, now, scope)

    async def _session_of(
        self, token: str, presented: str, client: Client, now: int, agent: Agent
    ) -> Session:
        """The active Session whose current refresh token is ``token``, issued to ``client``.

        A refresh token is checked by its hash in the Session (only we could have issued a matching
        one), so a refresh JWT needs no signature check and survives key rotation.
        """
        session_id = session_id_of(token)
        stored = await self.store.read(SESSION, session_id) if session_id else None
        session = Session(stored.body) if stored is not None and not stored.deleted else None
        if session is None or session.client_id != client.id:
            raise InvalidGrant("Unknown refresh token")
        if session.rotated_away(presented):
            await self._reused(session, presented, agent)
        if not session.holds_refresh(presented):
            raise InvalidGrant("Unknown refresh token")
        if not session.active:
            raise InvalidGrant("The session was revoked")
        if session.refresh_expired(now):
            raise InvalidGrant("Refresh token expired")
        return session

    async def _rotate(
        self,
        session_id: str,
        presented: str,
        tokens: IssuedTokens,
        scope: list[str] | None,
        agent: Agent,
        refreshed: Appended | None,
    ) -> None:
        """Replace the Session's tokens, unless another request rotated them first (a reuse too)."""

        def rotate(current: Stored | None) -> dict[str, Any]:
            if current is None or current.deleted:
                raise InvalidGrant("Unknown refresh token")
            session = Session(current.body)
            if not session.holds_refresh(presented):
                raise _Reused(session)
            if not session.active:
                raise InvalidGrant("The session was revoked")
            return session.rotate_refresh(presented, tokens.hashes(), scope, self.clock(), self.retention)

        try:
            result = await self.store.mutate(
                SESSION, session_id, rotate, attach=self.audit.attach(if_changed=[refreshed])
            )
        except _Reused as reused:
            await self._reused(reused.session, presented, agent)
        assert result.after is not None
        self.sessions.put(result.after)

    async def _reused(self, session: Session, presented: str, agent: Agent) -> NoReturn:
        """A rotated-away refresh token came back: revoke the Session, unless it lost a race just now.
        The reuse is recorded (with the Session it revoked) in the transaction that closes it."""
        now = self.clock()
        if session.just_rotated(presented, now, self.reuse_grace):
            raise InvalidGrant(JUST_ROTATED)
        reason = "refresh token reuse"
        reused = self.audit.event(
            REFRESH_TOKEN_REUSED,
            action="E",
            agent=agent,
            outcome=SERIOUS_FAILURE,
            entities=(Entity(f"{SESSION}/{session.id}", (("revoked", "true"),)),),
            reason="a rotated-away refresh token was presented again; its Session is revoked",
        )
        await close_session(
            self.store,
            session.id,
            reason,
            now=now,
            retention=self.retention,
            attach=self.audit.attach(
                always=[reused], if_changed=[self.audit.session_closed(session.id, agent, reason)]
            ),
        )
        raise InvalidGrant(REUSED)
