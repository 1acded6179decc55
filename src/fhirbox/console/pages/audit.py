"""The audit trail: AuditEvents filtered by type, client, outcome and time range, paged; one event."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlencode

from fhirbox.auth.principal import Principal
from fhirbox.console.audit_codes import KNOWN, OUTCOMES
from fhirbox.console.pages import PAGE_SIZE, Pages, page_number
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router
from fhirbox.models.session import iso

FILTERS = ("type", "client", "outcome", "from", "to")
# Without a "from", the list starts this long ago: a bounded, indexed range however long the trail.
DEFAULT_WINDOW = 86400


def instant(text: str) -> str | None:
    """A date-time typed into the filter (ISO 8601, ``datetime-local`` or a date; UTC unless said)."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:  # 0001-01-01T00:00+05:00 is before year 1 in UTC
        return None


class AuditPages(Pages):
    def add_routes(self, router: Router) -> None:
        router.add("GET", "/ui/audit", Route(self.list, "console"))
        router.add("GET", "/ui/audit/{id}", Route(self.show, "console"))

    async def list(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        chosen = {name: (request.query_value(name) or "").strip() for name in FILTERS}
        if request.query_value("from") is None:  # absent, not emptied by the person: the last day
            chosen["from"] = iso(self.sessions.clock() - DEFAULT_WINDOW)[:16]
        page = page_number(request)
        # Counting every match would read the whole range: pages go on while they are full.
        query = [
            ("_sort", "-_lastUpdated"),
            ("_count", str(PAGE_SIZE)),
            ("_page", str(page)),
            ("_total", "none"),
        ]
        problems = []
        if chosen["type"]:
            query.append(("type.code", chosen["type"]))
        if chosen["client"]:
            query.append(("agent.who.reference", f"Client/{chosen['client']}"))
        if chosen["outcome"]:
            query.append(("outcome", chosen["outcome"]))
        for name, prefix in (("from", "ge"), ("to", "le")):
            if chosen[name]:
                moment = instant(chosen[name])
                if moment is None:
                    problems.append(f"{name}: not a date-time ({chosen[name]!r}); use e.g. 2026-01-31T12:00")
                else:
                    query.append(("_lastUpdated", prefix + moment))
        answer = await self.api(request, principal).search("AuditEvent", query)
        if not answer.ok and answer.refused:
            return self.refused(request, principal, answer, "read the audit trail (GET /AuditEvent)")
        here = urlencode({k: v for k, v in chosen.items() if v})
        return self.render(
            request,
            principal,
            "audit.html",
            events=answer.entries,
            total=answer.total,
            page=page,
            page_size=PAGE_SIZE,
            chosen=chosen,
            here=here,
            codes=KNOWN,
            outcomes=OUTCOMES,
            problems=problems,
            error=None if answer.ok else answer.message,
        )

    async def show(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        event_id = request.path_params["id"]
        answer = await self.api(request, principal).get(f"/AuditEvent/{event_id}")
        if not answer.ok:
            return self.refused(request, principal, answer, f"read AuditEvent/{event_id}")
        return self.render(request, principal, "audit_event.html", event=answer.data, outcomes=OUTCOMES)
