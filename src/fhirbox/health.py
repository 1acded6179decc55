"""``GET /health`` (the process answers) and ``GET /ready`` (and its database does)."""

from __future__ import annotations

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, json_response
from fhirbox.storage.base import Store


class Health:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def health(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, {"status": "pass"})

    async def ready(self, request: Request, principal: Principal | None) -> Response:
        if await self.store.ping():
            return json_response(200, {"status": "pass"})
        return json_response(503, {"status": "fail", "detail": "database does not answer"})
