"""The dashboard: counts of Clients, open Sessions, tokens issued and failed authentications, and
tokens issued per minute over the last hour, each from an API search made as the signed-in client."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlencode

from fhirbox.auth.principal import Principal
from fhirbox.console.api import Answer, Api
from fhirbox.console.audit_codes import AUTH_FAILED, TOKEN_ISSUED
from fhirbox.console.chart import BarChart, bar_chart
from fhirbox.console.pages import Pages
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router
from fhirbox.models.session import iso

HOUR, DAY = 3600, 86400
# An hour is complete this long after its end (a write stamped just before it may commit just after).
SETTLED = 60
MINUTES = 60
CHART_PAGE, CHART_PAGES = 1000, 10


@dataclass(frozen=True, slots=True)
class Tile:
    label: str
    link: str
    count: int | None
    note: str = ""

    @property
    def value(self) -> str:
        return str(self.count) if self.count is not None else "—"


def tile(label: str, link: str, counted: Answer | int) -> Tile:
    if isinstance(counted, int):
        return Tile(label, link, counted)
    if counted.ok and counted.total is not None:
        return Tile(label, link, counted.total)
    return Tile(label, link, None, "not allowed" if counted.refused else counted.message)


class AuditCounts:
    """AuditEvents of one type in a time range, counted as one client sees them.

    A completed hour of the audit trail never changes (events are stamped as they are written and
    never rewritten), so each client's count of each completed hour is kept, and only the range's
    two partial hours are counted again: a day's count reads at most two hours of events. The ends
    are counted first, as the client, so a client now refused gets no kept figure.
    """

    def __init__(self, max_entries: int = 100_000) -> None:
        self.max_entries = max_entries
        self._hours: dict[tuple[str, str, int], int] = {}

    async def count(self, api: Api, client_id: str, code: str, start: float, end: float) -> Answer | int:
        first = -(-int(start) // HOUR) * HOUR
        last = int(end - SETTLED) // HOUR * HOUR
        if first >= last:
            return await audit_count(api, code, iso(start), iso(end))
        total = 0
        for edge_start, edge_end in ((start, first), (last, end)):
            answer = await audit_count(api, code, iso(edge_start), iso(edge_end))
            if not answer.ok or answer.total is None:
                return answer
            total += answer.total
        for hour in range(first, last, HOUR):
            key = (client_id, code, hour)
            if key not in self._hours:
                answer = await audit_count(api, code, iso(hour), iso(hour + HOUR))
                if not answer.ok or answer.total is None:
                    return answer
                if len(self._hours) >= self.max_entries:
                    self._hours.clear()
                self._hours[key] = answer.total
            total += self._hours[key]
        return total


class DashboardPage(Pages):
    def add_routes(self, router: Router) -> None:
        self.counts = AuditCounts()
        for path in ("/ui", "/ui/"):
            router.add("GET", path, Route(self.show, "console"))

    async def show(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        api = self.api(request, principal)
        now = self.sessions.clock()
        tiles = [
            tile("Clients", "/ui/clients", await api.count("Client", [])),
            tile(
                "Open Sessions", "/ui/sessions?state=active", await api.count("Session", [("active", "true")])
            ),
        ]
        for label, code in (("Tokens issued", TOKEN_ISSUED), ("Failed authentications", AUTH_FAILED)):
            for span, seconds in (("hour", HOUR), ("day", DAY)):
                link = "/ui/audit?" + urlencode({"type": code, "from": iso(now - seconds)[:16]})
                counted = await self.counts.count(api, principal.client_id, code, now - seconds, now)
                tiles.append(tile(f"{label}, last {span}", link, counted))
        chart, chart_answer = await tokens_per_minute(api, now)
        return self.render(
            request,
            principal,
            "dashboard.html",
            tiles=tiles,
            chart=chart,
            chart_answer=chart_answer,
            chart_link="/ui/audit?" + urlencode({"type": TOKEN_ISSUED, "from": iso(now - HOUR)[:16]}),
        )


async def audit_count(api: Api, code: str, since: str, until: str) -> Answer:
    query = [("type.code", code), ("_lastUpdated", f"ge{since}"), ("_lastUpdated", f"lt{until}")]
    return await api.count("AuditEvent", query)


async def tokens_per_minute(api: Api, now: float) -> tuple[BarChart | None, Answer]:
    """Tokens issued in each of the last 60 minutes, from the hour's token events (their ids and
    times only, ``CHART_PAGE`` at a time, at most ``CHART_PAGES`` pages: bounded work)."""
    start = (int(now) // 60 - MINUTES + 1) * 60
    values = [0] * MINUTES
    answer: Answer | None = None
    for page in range(1, CHART_PAGES + 1):
        answer = await api.search("AuditEvent", [
            ("type.code", TOKEN_ISSUED), ("_lastUpdated", f"ge{iso(start)}"), ("_elements", "id"),
            ("_count", str(CHART_PAGE)), ("_page", str(page)), ("_total", "none"),
        ])  # fmt: skip
        if not answer.ok:
            return None, answer
        for event in answer.entries:
            minute = (epoch(event["meta"]["lastUpdated"]) - start) // 60
            if 0 <= minute < MINUTES:
                values[int(minute)] += 1
        if len(answer.entries) < CHART_PAGE:
            break
    assert answer is not None
    labels = [iso(start + minute * 60)[11:16] for minute in range(MINUTES)]
    return bar_chart(values, labels), answer


def epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
