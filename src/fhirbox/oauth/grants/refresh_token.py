"""The refresh token grant (RFC 6749 §6) with rotation and reuse detection (RFC 9700 §4.14).

Every use returns a new access token for the same Session and a new refresh token; the old refresh
token stops working. Presenting an already-rotated refresh token again means it leaked: the whole
Session is revoked. ``refresh_token_expiration`` counts from the last use.
"""

from __future__ import annotations

import hmac
import time
from typing import Any

from fhirbox.oauth.clients import ClientCredentialsSettings
from fhirbox.oauth.endpoint import OAuthRequest
from fhirbox.oauth.errors import InvalidGrant, InvalidRequest, UnauthorizedClient
from fhirbox.oauth.grants import IssuingGrant
from fhirbox.oauth.issuance import issue_tokens, token_response
from fhirbox.oauth.sessions import REFRESH_HISTORY, SESSION, closed, purge_time
from fhirbox.oauth.tokens import session_id_of, token_hash
from fhirbox.storage.base import Stored


class _Reused(Exception):
    """The presented refresh token was already rotated away."""


def _is_current(body: dict[str, Any], presented: str) -> bool:
    stored = body.get("refresh_token")
    return isinstance(stored, str) and hmac.compare_digest(stored, presented)


def _was_rotated(body: dict[str, Any], presented: str) -> bool:
    return any(hmac.compare_digest(old, presented) for old in body.get("refresh_token_history", ()))


class RefreshTokenGrant(IssuingGrant):
    async def __call__(self, client: Stored, request: OAuthRequest) -> dict[str, Any]:
        token = request.get("refresh_token")
        if token is None:
            raise InvalidRequest("refresh_token is required")
        if "client_credentials" not in client.body.get("grant_types", ()):
            raise UnauthorizedClient("This client may not use the client_credentials grant")
        config = ClientCredentialsSettings.of(client.body, self.default_expiration)
        if not config.refresh_token:
            raise UnauthorizedClient("Refresh tokens are not enabled for this client")

        # A refresh token is checked by its hash in the Session (only we could have issued a
        # matching one), so a refresh JWT needs no signature check and survives key rotation.
        session_id = session_id_of(token)
        stored = await self.store.read(SESSION, session_id) if session_id else None
        if stored is None or stored.deleted or stored.body.get("client", {}).get("id") != client.id:
            raise InvalidGrant("Unknown refresh token")
        session = stored.body
        presented = token_hash(token)
        if _was_rotated(session, presented):
            await self._revoke_for_reuse(stored.id, presented)
            raise InvalidGrant("Refresh token was already used; the session is revoked")
        if not _is_current(session, presented):
            raise InvalidGrant("Unknown refresh token")
        if session.get("active") is not True:
            raise InvalidGrant("The session was revoked")
        now = int(time.time())
        refresh_exp = session.get("refresh_token_exp")
        if isinstance(refresh_exp, int) and refresh_exp <= now:
            raise InvalidGrant("Refresh token expired")

        scope = session.get("scope")
        tokens = issue_tokens(
            self.jwts,
            config,
            session_id=stored.id,
            client_id=client.id,
            now=now,
            audience=session.get("audience"),
            scope=scope,
        )
        if tokens.refresh_token is None:
            raise UnauthorizedClient("Refresh tokens are not enabled for this client")

        def rotate(current: Stored | None) -> dict[str, Any]:
            if current is None or current.deleted:
                raise InvalidGrant("Unknown refresh token")
            body = current.body
            if not _is_current(body, presented):
                # Another request rotated it first: that is a reuse too.
                raise _Reused
            if body.get("active") is not True:
                raise InvalidGrant("The session was revoked")
            new = {key: value for key, value in body.items() if key != "meta"}
            history = [presented, *body.get("refresh_token_history", ())][:REFRESH_HISTORY]
            new.update(
                exp=tokens.expires_at,
                access_token=tokens.access_hash,
                refresh_token=tokens.refresh_hash,
                refresh_token_history=history,
                last_refresh=now,
            )
            new.pop("refresh_token_exp", None)
            if tokens.refresh_expires_at is not None:
                new["refresh_token_exp"] = tokens.refresh_expires_at
            purge_after = purge_time(tokens.expires_at, tokens.refresh_expires_at, True, self.retention)
            new.pop("purge_after", None)
            if purge_after is not None:
                new["purge_after"] = purge_after
            return new

        try:
            result = await self.store.mutate(SESSION, stored.id, rotate)
        except _Reused:
            await self._revoke_for_reuse(stored.id, presented)
            raise InvalidGrant("Refresh token was already used; the session is revoked") from None
        assert result.after is not None
        self.sessions.put(result.after)
        return token_response(tokens, now, scope)

    async def _revoke_for_reuse(self, session_id: str, presented: str) -> None:
        def revoke(current: Stored | None) -> dict[str, Any] | Any:
            if current is None or current.deleted or current.body.get("active") is not True:
                raise InvalidGrant("The session was revoked")
            return closed(current.body, self.retention, "refresh token reuse")

        try:
            await self.store.mutate(SESSION, session_id, revoke)
        except InvalidGrant:
            pass
