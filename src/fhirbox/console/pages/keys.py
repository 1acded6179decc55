"""Signing keys: kid, algorithm, status and dates (``GET /auth/keys``); rotate (``POST /auth/keys/rotate``).
Both are root routes of the API, called as the signed-in client like every console action."""

from __future__ import annotations

from fhirbox.auth.principal import Principal
from fhirbox.console.html import redirect
from fhirbox.console.pages import Pages
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router


class KeyPages(Pages):
    def add_routes(self, router: Router) -> None:
        router.add("GET", "/ui/keys", Route(self.list, "console"))
        router.add("POST", "/ui/keys/rotate", Route(self.rotate, "console"))

    async def list(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        answer = await self.api(request, principal).get("/auth/keys")
        if not answer.ok:
            return self.refused(request, principal, answer, "list the signing keys (GET /auth/keys)")
        return self.render(
            request,
            principal,
            "keys.html",
            keys=answer.data.get("keys", []),
            rotated=request.query_value("rotated"),
        )

    async def rotate(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        answer = await self.api(request, principal).call("POST", "/auth/keys/rotate")
        if not answer.ok:
            return self.refused(
                request, principal, answer, "rotate the signing keys (POST /auth/keys/rotate)"
            )
        return redirect(f"/ui/keys?rotated={answer.data.get('kid', '')}")
