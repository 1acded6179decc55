"""One module per grant type; each reads top to bottom as its RFC's checks."""

from __future__ import annotations

from typing import Any, Protocol

from fhirbox.oauth.endpoint import OAuthRequest
from fhirbox.storage.base import Stored


class Grant(Protocol):
    async def __call__(self, client: Stored, request: OAuthRequest) -> dict[str, Any]:
        """The token response for an authenticated ``client``; raises an ``OAuthError`` otherwise."""
