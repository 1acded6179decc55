"""Discovery: the JWKS and the RFC 8414 / OpenID Connect metadata documents."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, json_response
from fhirbox.oauth.keys import KeyRing

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]


class Discovery:
    def __init__(self, keys: KeyRing, grant_types: Sequence[str]) -> None:
        """``grant_types``: those the token endpoint serves."""
        self.keys = keys
        self.grant_types = list(grant_types)

    def metadata(self, base: str) -> dict[str, Any]:
        """The metadata as seen at ``base``, the request's base URL."""
        algorithms = sorted({key.alg for key in self.keys.published()})
        return {
            "issuer": base,
            "token_endpoint": f"{base}/auth/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_endpoint": f"{base}/auth/revoke",
            "grant_types_supported": self.grant_types,
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "response_types_supported": ["token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algorithms,
            "access_token_signing_alg_values_supported": algorithms,
        }

    async def jwks(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, self.keys.jwks())

    async def authorization_server(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, self.metadata(request.base_url))
