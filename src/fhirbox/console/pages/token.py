"""Try a token: a client_credentials request to the real ``/auth/token`` handler (through the
pipeline, as any client's token request: throttled and audited alike), with the answer and the
decoded JWT header and claims (decoded for display, not verified: this page only shows them)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import jwt

from fhirbox.auth.principal import Principal
from fhirbox.console.forms import read_form
from fhirbox.console.pages import Pages
from fhirbox.console.pages.clients import JWT_BEARER
from fhirbox.http.formats import FORM_TYPE
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router


def decoded(token: Any) -> dict[str, Any] | None:
    """A JWT's header and claims, unverified; None when ``token`` is not a JWT."""
    if not isinstance(token, str) or token.count(".") != 2:
        return None
    try:
        return {
            "header": jwt.get_unverified_header(token),
            "claims": jwt.decode(token, options={"verify_signature": False}),
        }
    except jwt.PyJWTError:
        return None


class TokenPage(Pages):
    def add_routes(self, router: Router) -> None:
        router.add("GET", "/ui/token", Route(self.form, "console"))
        router.add("POST", "/ui/token", Route(self.request_token, "console"))

    async def form(self, request: Request, principal: Principal | None) -> Response:
        return self.render(request, principal, "token.html", values={}, answer=None, jwts=[])

    async def request_token(self, request: Request, principal: Principal | None) -> Response:
        form = await read_form(request)
        values = {name: form.text(name) for name in ("client_id", "scope", "audience")}
        params = {"grant_type": "client_credentials", "client_id": values["client_id"]}
        assertion = form.text("client_assertion")
        if assertion:
            params.update(client_assertion_type=JWT_BEARER, client_assertion=assertion)
        else:
            params["client_secret"] = form.first("client_secret")
        for name in ("scope", "audience"):
            if values[name]:
                params[name] = values[name]
        # The token endpoint is public: nobody's principal is lent to it, the client authenticates itself.
        answer = await self.api(request, None).call(
            "POST", "/auth/token", body=urlencode(params).encode(), content_type=FORM_TYPE
        )
        data = answer.data if isinstance(answer.data, dict) else {}
        jwts = [(name, decoded(data.get(name))) for name in ("access_token", "refresh_token")]
        return self.render(
            request,
            principal,
            "token.html",
            status=200,
            values=values,
            answer=answer,
            jwts=[(name, parts) for name, parts in jwts if parts is not None],
        )
