"""Discovery: the JWKS, the RFC 8414 metadata (also served as ``openid-configuration``) and SMART's
``/.well-known/smart-configuration`` (SMART App Launch v2.2 §2.3)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, json_response
from fhirbox.models.jwk_set import ASSERTION_ALGORITHMS
from fhirbox.oauth.keys import KeyRing

AUTH_METHODS = ["private_key_jwt", "client_secret_basic", "client_secret_post"]
# What a private_key_jwt client assertion (RFC 7523) may be signed with: SMART's RS384 and ES384 first.
CLIENT_ASSERTION_ALGORITHMS = list(ASSERTION_ALGORITHMS)
# SMART system scopes a client may be granted (any type, v2 letters or v1 names; see smart_scopes.py).
SCOPES_SUPPORTED = ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write", "system/*.*"]
SMART_CAPABILITIES = [
    "client-confidential-asymmetric",
    "client-confidential-symmetric",
    "permission-v1",
    "permission-v2",
]


class Discovery:
    def __init__(self, keys: KeyRing, grant_types: Sequence[str]) -> None:
        """``grant_types``: those the token endpoint serves."""
        self.keys = keys
        self.grant_types = list(grant_types)

    def metadata(self, base: str) -> dict[str, Any]:
        """The RFC 8414 metadata as seen at ``base``, the request's base URL.

        ``response_types_supported`` is empty: fhirbox has no authorization endpoint, so it serves no
        response type, and it issues no ID tokens (no OpenID Connect fields).
        """
        algorithms = sorted({key.alg for key in self.keys.published()})
        return {
            "issuer": base,
            "token_endpoint": f"{base}/auth/token",
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "revocation_endpoint": f"{base}/auth/revoke",
            "introspection_endpoint": f"{base}/auth/introspect",
            "grant_types_supported": self.grant_types,
            "response_types_supported": [],
            "scopes_supported": SCOPES_SUPPORTED,
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
            "revocation_endpoint_auth_methods_supported": AUTH_METHODS,
            "revocation_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
            "introspection_endpoint_auth_methods_supported": AUTH_METHODS,
            "introspection_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
            "access_token_signing_alg_values_supported": algorithms,
        }

    def smart_configuration(self, base: str) -> dict[str, Any]:
        """SMART's configuration document for Backend Services clients, as seen at ``base``."""
        return {
            "issuer": base,
            "jwks_uri": f"{base}/.well-known/jwks.json",
            "token_endpoint": f"{base}/auth/token",
            "token_endpoint_auth_methods_supported": AUTH_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": CLIENT_ASSERTION_ALGORITHMS,
            "grant_types_supported": self.grant_types,
            "scopes_supported": SCOPES_SUPPORTED,
            "response_types_supported": [],
            "capabilities": SMART_CAPABILITIES,
            "code_challenge_methods_supported": ["S256"],
            "introspection_endpoint": f"{base}/auth/introspect",
            "revocation_endpoint": f"{base}/auth/revoke",
        }

    async def jwks(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, self.keys.jwks())

    async def authorization_server(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, self.metadata(request.base_url))

    async def smart(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, self.smart_configuration(request.base_url))
