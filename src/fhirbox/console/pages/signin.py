"""Signing in and out, and the stylesheet (the only file the console serves)."""

from __future__ import annotations

from urllib.parse import urlsplit

from fhirbox.auth.principal import Principal
from fhirbox.console.forms import read_form
from fhirbox.console.html import HERE, console_response, cookie_header, redirect
from fhirbox.console.pages import Pages
from fhirbox.console.sessions import COOKIE, COOKIE_PATH, SignInRefused
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router

_REASONS = {"expired": "Your console session ended: sign in again.", "signed-out": "You are signed out."}


class SignInPages(Pages):
    def add_routes(self, router: Router) -> None:
        self.stylesheet = (HERE / "static" / "console.css").read_bytes()
        router.add("GET", "/ui/sign-in", Route(self.form, "public"))
        router.add("POST", "/ui/sign-in", Route(self.sign_in, "public"))
        router.add("POST", "/ui/sign-out", Route(self.sign_out, "console"))
        router.add("GET", "/ui/static/console.css", Route(self.css, "public"))

    async def css(self, request: Request, principal: Principal | None) -> Response:
        return console_response(200, self.stylesheet, b"text/css; charset=utf-8")

    async def form(self, request: Request, principal: Principal | None) -> Response:
        notice = _REASONS.get(request.query_value("reason") or "")
        return self.render(request, None, "sign_in.html", notice=notice, error=None, client_id="")

    async def sign_in(self, request: Request, principal: Principal | None) -> Response:
        refuse_cross_site(request)
        form = await read_form(request)
        client_id, secret = form.text("client_id"), form.first("client_secret")
        try:
            if not client_id or not secret:
                raise SignInRefused(400, "Enter the client id and its secret")
            client = await self.sessions.check_credentials(client_id, secret, request.client_addr)
            signed_in = self.sessions.principal_of(client)
            if not await self.pipeline.may_use_console(signed_in, request):
                self.sessions.sign_in_failed(client_id, request.client_addr, "not allowed GET /ui")
                raise SignInRefused(
                    403, "This client may not use the console: no AccessPolicy allows it GET /ui"
                )
        except SignInRefused as refused:
            headers = {"Retry-After": str(refused.retry_after)} if refused.retry_after else None
            return self.templates.page(
                refused.status,
                "sign_in.html",
                headers=headers,
                user=None,
                csrf="",
                notice=None,
                error=str(refused),
                client_id=client_id,
            )
        await self.sessions.sign_out(request)  # a session this browser still had ends here
        cookie = await self.sessions.open(client)
        return redirect("/ui/", {"Set-Cookie": cookie_header(request, COOKIE, cookie, COOKIE_PATH)})

    async def sign_out(self, request: Request, principal: Principal | None) -> Response:
        await self.sessions.sign_out(request)
        cleared = cookie_header(request, COOKIE, "", COOKIE_PATH, max_age=0)
        return redirect("/ui/sign-in?reason=signed-out", {"Set-Cookie": cleared})


def refuse_cross_site(request: Request) -> None:
    """403 for a sign-in posted from another site (login CSRF): there is no session to bind a token to
    yet, so the browser's ``Origin`` (or ``Sec-Fetch-Site``) must say the form is this server's."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise HttpError(403, "Sign-in forms must come from this console")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        expected = urlsplit(request.base_url)
        given = urlsplit(origin)
        if (given.scheme, given.netloc) != (expected.scheme, expected.netloc):
            raise HttpError(403, "Sign-in forms must come from this console")
