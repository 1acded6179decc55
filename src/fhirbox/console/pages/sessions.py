"""Sessions: open and closed, filtered by client; close one, or every open one of a client."""

from __future__ import annotations

from urllib.parse import quote, urlencode

from fhirbox.auth.principal import Principal
from fhirbox.console.forms import read_form
from fhirbox.console.html import redirect
from fhirbox.console.pages import PAGE_SIZE, Pages, page_number
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router

# Closing all of a client's Sessions from one form closes at most this many (pages of 100).
_CLOSE_ALL_PAGES = 50


class SessionPages(Pages):
    def add_routes(self, router: Router) -> None:
        router.add("GET", "/ui/sessions", Route(self.list, "console"))
        router.add("POST", "/ui/sessions/close-all", Route(self.close_all, "console"))
        router.add("POST", "/ui/sessions/{id}/close", Route(self.close, "console"))

    async def list(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = (request.query_value("client") or "").strip()
        state = request.query_value("state") or "active"
        page = page_number(request)
        query = [("_sort", "-_lastUpdated"), ("_count", str(PAGE_SIZE)), ("_page", str(page))]
        if state in ("active", "closed"):
            query.append(("active", "true" if state == "active" else "false"))
        if client_id:
            query.append(("client.id", client_id))
        answer = await self.api(request, principal).search("Session", query)
        if not answer.ok:
            return self.refused(request, principal, answer, "list Sessions (GET /Session)")
        here = urlencode({"client": client_id, "state": state})
        return self.render(
            request,
            principal,
            "sessions.html",
            sessions=answer.entries,
            total=answer.total,
            page=page,
            page_size=PAGE_SIZE,
            client_id=client_id,
            state=state,
            here=here,
            closed=request.query_value("closed"),
        )

    async def close(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        session_id = request.path_params["id"]
        answer = await self.api(request, principal).delete(f"/Session/{session_id}")
        if not answer.ok:
            return self.refused(request, principal, answer, f"close Session/{session_id}")
        back = (await read_form(request)).first("back")
        return redirect(_local(back) or "/ui/sessions?closed=1")

    async def close_all(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = (await read_form(request)).text("client")
        api = self.api(request, principal)
        closed = 0
        for _ in range(_CLOSE_ALL_PAGES):
            found = await api.search(
                "Session",
                [("client.id", client_id), ("active", "true"), ("_count", "100"), ("_elements", "id")],
            )
            if not found.ok:
                return self.refused(request, principal, found, f"list the Sessions of Client/{client_id}")
            if not found.entries:
                break
            for session in found.entries:
                answer = await api.delete(f"/Session/{session['id']}")
                if not answer.ok:
                    return self.refused(request, principal, answer, f"close Session/{session['id']}")
                closed += 1
        return redirect(f"/ui/sessions?client={quote(client_id, safe='')}&state=closed&closed={closed}")


def _local(path: str) -> str | None:
    """``path`` when it is a console path (never another site: no open redirect)."""
    local = path.startswith("/ui/") and not path.startswith("//") and "\\" not in path
    # Printable ASCII only: it becomes a Location header (no line breaks, nothing latin-1 cannot hold).
    return path if local and path.isascii() and path.isprintable() else None
