"""One module per grant type; each reads top to bottom as its RFC's checks."""

from __future__ import annotations

from typing import Any, Protocol

from fhirbox.clock import Clock
from fhirbox.models.client import Client
from fhirbox.oauth.client_auth import OAuthRequest
from fhirbox.oauth.sessions import SessionCache
from fhirbox.oauth.token_formats import JwtTokens
from fhirbox.storage.base import Store


class Grant(Protocol):
    async def __call__(self, client: Client, request: OAuthRequest) -> dict[str, Any]:
        """The token response for an authenticated ``client``; raises an ``OAuthError`` otherwise."""


class IssuingGrant:
    """What every grant that issues tokens works with."""

    def __init__(
        self,
        store: Store,
        sessions: SessionCache,
        jwts: JwtTokens,
        *,
        default_expiration: int,
        retention: int,
        clock: Clock,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.jwts = jwts
        self.default_expiration = default_expiration
        self.retention = retention
        self.clock = clock
