"""The console's calls to the API: each one a request through the pipeline as the signed-in client
(``Pipeline.call``), so the console can do exactly what that client could do over HTTP."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.pipeline import Pipeline

JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Answer:
    """The API's answer: status, JSON body (None when empty) and headers."""

    status: int
    data: Any
    headers: dict[str, str]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def refused(self) -> bool:
        return self.status in (401, 403)

    @property
    def message(self) -> str:
        """The error's text: an OperationOutcome's diagnostics or an OAuth error_description."""
        data = self.data if isinstance(self.data, dict) else {}
        issues = data.get("issue")
        if isinstance(issues, list) and issues and isinstance(issues[0], dict):
            return str(issues[0].get("diagnostics", ""))
        if "error" in data:
            return str(data.get("error_description") or data["error"])
        return f"HTTP {self.status}"

    @property
    def entries(self) -> list[dict[str, Any]]:
        """The resources of a search Bundle."""
        data = self.data if isinstance(self.data, dict) else {}
        return [e["resource"] for e in data.get("entry", ()) if isinstance(e, dict) and "resource" in e]

    @property
    def total(self) -> int | None:
        data = self.data if isinstance(self.data, dict) else {}
        total = data.get("total")
        return total if isinstance(total, int) else None


class Api:
    """The API as ``principal`` sees it, for the console page answering ``origin``."""

    def __init__(self, pipeline: Pipeline, principal: Principal | None, origin: Request) -> None:
        self.pipeline = pipeline
        self.principal = principal
        self.origin = origin

    async def call(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: bytes = b"",
        content_type: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> Answer:
        response = await self.pipeline.call(
            self.principal, self.origin, method, path, query or [], body, content_type, headers or []
        )
        answered = {name.decode("latin-1"): value.decode("latin-1") for name, value in response.headers}
        data = orjson.loads(response.body) if response.body else None
        return Answer(response.status, data, answered)

    async def get(self, path: str) -> Answer:
        return await self.call("GET", path)

    async def search(self, type_: str, query: list[tuple[str, str]]) -> Answer:
        return await self.call("GET", f"/{type_}", query)

    async def count(self, type_: str, query: list[tuple[str, str]]) -> Answer:
        """A search for its ``total`` only (one id-only resource is fetched)."""
        return await self.call("GET", f"/{type_}", [*query, ("_count", "1"), ("_elements", "id")])

    async def put(self, path: str, document: Any, if_match: str | None = None) -> Answer:
        headers = [("If-Match", if_match)] if if_match else []
        return await self.call("PUT", path, body=orjson.dumps(document), content_type=JSON, headers=headers)

    async def send(self, method: str, path: str, text: str, content_type: str) -> Answer:
        return await self.call(method, path, body=text.encode(), content_type=content_type)

    async def delete(self, path: str) -> Answer:
        return await self.call("DELETE", path)
