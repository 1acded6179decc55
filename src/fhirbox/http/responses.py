"""Responses and content negotiation: JSON unless the client asks for YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fhirbox.http.errors import HttpError, operation_outcome
from fhirbox.http.formats import YAML_TYPES, dump_json, dump_yaml
from fhirbox.http.request import Request, Send

JSON_CONTENT_TYPE = b"application/json"
YAML_CONTENT_TYPE = b"text/yaml; charset=utf-8"


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)

    async def send(self, send: Send) -> None:
        headers = self.headers
        if self.status != 204:  # RFC 9110: a 204 carries no Content-Length
            headers.append((b"content-length", str(len(self.body)).encode()))
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def wants_yaml(request: Request) -> bool:
    """``?_format=yaml|json`` wins; otherwise an Accept header naming a YAML type."""
    if request.query_string:
        try:
            requested = request.query_value("_format")
        except HttpError:  # an undecodable query is reported elsewhere; answer in JSON meanwhile
            requested = None
        if requested is not None:
            return requested.lower() in ("yaml", "yml", "text/yaml", "application/yaml")
    accept = request.headers.get("accept")
    if not accept or "yaml" not in accept:
        return False
    return any(part.split(";", 1)[0].strip().lower() in YAML_TYPES for part in accept.split(","))


def render(request: Request, status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    """Encode ``data`` in the negotiated format."""
    if wants_yaml(request):
        body, content_type = dump_yaml(data), YAML_CONTENT_TYPE
    else:
        body, content_type = dump_json(data), JSON_CONTENT_TYPE
    raw_headers = [(b"content-type", content_type)]
    if headers:
        raw_headers.extend((name.encode(), value.encode()) for name, value in headers.items())
    return Response(status, body, raw_headers)


def json_response(status: int, data: Any, headers: dict[str, str] | None = None) -> Response:
    """A JSON response whatever the client accepts (OAuth endpoints answer JSON only)."""
    raw_headers = [(b"content-type", JSON_CONTENT_TYPE)]
    if headers:
        raw_headers.extend((name.encode(), value.encode()) for name, value in headers.items())
    return Response(status, dump_json(data), raw_headers)


def empty(status: int, headers: dict[str, str] | None = None) -> Response:
    raw = [(name.encode(), value.encode()) for name, value in (headers or {}).items()]
    return Response(status, b"", raw)


def error_response(request: Request, error: HttpError) -> Response:
    return render(request, error.status, operation_outcome(error.code, error.diagnostics), error.headers)
