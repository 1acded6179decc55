"""One module per grant type; each reads top to bottom as its RFC's checks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from fhirbox.audit import Audit
from fhirbox.clock import Clock
from fhirbox.models.client import Client
from fhirbox.oauth.client_auth import OAuthRequest
from fhirbox.oauth.sessions import SessionCache
from fhirbox.oauth.token_formats import JwtTokens
from fhirbox.storage.base import Store


class Grant(Protocol):
    async def __call__(self, client: Client, request: OAuthRequest) -> dict[str, Any]:
        """The token response for an authenticated ``client``; raises an ``OAuthError`` otherwise."""


@dataclass(frozen=True, slots=True)
class Issuance:
    """What every grant that issues tokens works with."""

    store: Store
    sessions: SessionCache
    jwts: JwtTokens
    default_expiration: int
    retention: int
    clock: Clock
    audit: Audit


class IssuingGrant:
    """A grant that issues tokens and stores their Session."""

    def __init__(self, issuance: Issuance) -> None:
        self.store = issuance.store
        self.sessions = issuance.sessions
        self.jwts = issuance.jwts
        self.default_expiration = issuance.default_expiration
        self.retention = issuance.retention
        self.clock = issuance.clock
        self.audit = issuance.audit
