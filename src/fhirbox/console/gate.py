"""The console as the request pipeline sees it (``pipeline.ConsoleGate``): its paths, who a console
request is, and its failures as HTML pages."""

from __future__ import annotations

from fhirbox.auth.principal import Principal
from fhirbox.console.html import Templates, console_response, cookie_header, redirect
from fhirbox.console.sessions import COOKIE, COOKIE_PATH, ConsoleSessions, cookie_value
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response

SIGN_IN = "/ui/sign-in"
# Headers of an HttpError worth passing on to a browser.
_KEPT_HEADERS = ("Retry-After", "Allow")


class ConsoleGate:
    def __init__(self, sessions: ConsoleSessions, templates: Templates) -> None:
        self.sessions = sessions
        self.templates = templates

    def owns(self, path: str) -> bool:
        return path == COOKIE_PATH or path.startswith(COOKIE_PATH + "/")

    async def authenticate(self, request: Request) -> Principal:
        return await self.sessions.authenticate(request)

    def error_response(self, request: Request, error: HttpError) -> Response:
        if error.status == 401:
            # No working session: to the sign-in page, forgetting any cookie that no longer works.
            if cookie_value(request) is None:
                return redirect(SIGN_IN)
            expired = cookie_header(request, COOKIE, "", COOKIE_PATH, max_age=0)
            return redirect(f"{SIGN_IN}?reason=expired", {"Set-Cookie": expired})
        headers = {name: value for name, value in error.headers.items() if name in _KEPT_HEADERS}
        try:
            body = self.templates.render("error.html", status=error.status, message=error.diagnostics)
        except Exception:  # the error page must not fail in turn
            body = f"{error.status} {error.diagnostics}".encode()
            return console_response(error.status, body, b"text/plain; charset=utf-8", headers)
        return console_response(error.status, body, headers=headers)
