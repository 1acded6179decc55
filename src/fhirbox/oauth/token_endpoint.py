"""``POST /auth/token``: parse, authenticate the client, run the grant, answer (RFC 6749 §3.2, §5)."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, json_response
from fhirbox.oauth.client_auth import ClientAuthentication, read_oauth_request
from fhirbox.oauth.errors import NO_STORE, InvalidRequest, OAuthError, UnsupportedGrantType
from fhirbox.oauth.grants import Grant
from fhirbox.oauth.token_formats import is_jwt


class TokenEndpoint:
    def __init__(
        self,
        client_auth: ClientAuthentication,
        grants: Mapping[str, Grant],
        count_issued: Callable[[str, str], None],
    ) -> None:
        self.client_auth = client_auth
        self.grants = grants
        # Told the grant type and format ("jwt" or "opaque") of every access token issued.
        self.count_issued = count_issued

    async def handle(self, request: Request, principal: Principal | None) -> Response:
        try:
            oauth = await read_oauth_request(request)
            client = await self.client_auth.authenticate(oauth)
            request.client_id = client.id
            grant_type = oauth.get("grant_type")
            if grant_type is None:
                raise InvalidRequest("grant_type is required")
            grant = self.grants.get(grant_type)
            if grant is None:
                raise UnsupportedGrantType(
                    f"Unsupported grant_type {grant_type!r}; supported: {', '.join(self.grants)}"
                )
            answer = await grant(client, oauth)
        except OAuthError as error:
            return error.response()
        self.count_issued(grant_type, "jwt" if is_jwt(answer["access_token"]) else "opaque")
        return json_response(200, answer, dict(NO_STORE))
