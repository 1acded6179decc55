"""The console's pages, one module per area; each page reads and changes data only through ``Api``."""

from __future__ import annotations

from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.console.api import Answer, Api
from fhirbox.console.html import Templates
from fhirbox.console.sessions import ConsoleSessions, cookie_value, csrf_token
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.pipeline import Pipeline

PAGE_SIZE = 50


class Pages:
    """What every page needs: the API as the signed-in client, and the templates."""

    def __init__(self, pipeline: Pipeline, templates: Templates, sessions: ConsoleSessions) -> None:
        self.pipeline = pipeline
        self.templates = templates
        self.sessions = sessions

    def api(self, request: Request, principal: Principal | None) -> Api:
        return Api(self.pipeline, principal, request)

    def render(
        self,
        request: Request,
        principal: Principal | None,
        name: str,
        status: int = 200,
        **context: Any,
    ) -> Response:
        cookie = cookie_value(request)
        return self.templates.page(
            status,
            name,
            user=principal.client_id if principal is not None else None,
            csrf=csrf_token(cookie) if cookie is not None and principal is not None else "",
            **context,
        )

    def refused(self, request: Request, principal: Principal, answer: Answer, doing: str) -> Response:
        """The page for an API call the client may not make (or that failed): what, and why."""
        return self.render(
            request, principal, "refused.html", status=answer.status, doing=doing, answer=answer
        )


def page_number(request: Request) -> int:
    value = request.query_value("page") or "1"
    # At most 6 digits before int(): a longer string may exceed int()'s digit limit (ValueError).
    return (
        int(value)
        if value.isascii() and value.isdigit() and len(value) <= 6 and 0 < int(value) <= 100_000
        else 1
    )
