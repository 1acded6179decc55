"""The request as handlers see it: method, path, query, lower-case headers and a bounded body."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

from fhirbox.http.errors import HttpError
from fhirbox.http.formats import parse_document, parse_pairs

if TYPE_CHECKING:
    from fhirbox.policy.scope_enforcement import ResourceLimit

# Set in a request scope's ``extensions`` by the server once the whole body has arrived: reading it
# then needs no deadline.
BODY_RECEIVED = "fhirbox.body_received"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class Request:
    """One HTTP request. The body is read on demand and never beyond ``max_body_bytes``."""

    __slots__ = (
        "_body",
        "_query",
        "_query_invalid",
        "_receive",
        "base_url",
        "base_url_forwarded",
        "body_timeout",
        "client_addr",
        "client_id",
        "headers",
        "max_body_bytes",
        "max_depth",
        "method",
        "path",
        "path_params",
        "query_string",
        "request_id",
        "resource_limit",
        "scope",
    )

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        *,
        max_body_bytes: int,
        max_depth: int,
        request_id: str = "",
        body_timeout: float = 30.0,
    ) -> None:
        self.scope = scope
        self._receive = receive
        self.method: str = scope["method"]
        path: str = scope["path"]
        if "//" in path or (path.endswith("/") and path != "/"):
            path = canonical_path(path)
        # What routing matched and what AccessPolicies see (``uri``) are one and the same path.
        self.path = path
        self.query_string: str = scope.get("query_string", b"").decode("latin-1")
        headers: dict[str, str] = {}
        repeated: dict[str, list[str]] | None = None
        for raw_name, raw_value in scope.get("headers", ()):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            if name in headers:  # joined once at the end: linear in the number of fields
                if repeated is None:
                    repeated = {}
                repeated.setdefault(name, [headers[name]]).append(value)
            headers[name] = value
        if repeated is not None:
            for name, values in repeated.items():
                headers[name] = ", ".join(values)
        self.headers = headers
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout
        self.max_depth = max_depth
        self.request_id = request_id
        self.path_params: dict[str, str] = {}
        self._body: bytes | None = None
        self._query: list[tuple[str, str]] | None = None
        self._query_invalid = False
        client = scope.get("client")
        # The peer's address and the configured base URL until the pipeline resolves forwarded headers
        # (``http/forwarded.py``): everything reads these two, never the headers or the scope.
        self.client_addr: str = str(client[0]) if client else ""
        self.base_url: str = ""
        # The base URL came from a trusted proxy's forwarded host (no ``FHIRBOX_BASE_URL``).
        self.base_url_forwarded = False
        # Set by the SMART scope check when the token's scopes limit which resources the request may
        # touch (``policy/scope_enforcement.py``); None: no such limit.
        self.resource_limit: ResourceLimit | None = None
        # The client that authenticated for this request (the pipeline's principal, or the client the
        # token or revocation endpoint authenticated), for the access log; None until one has.
        self.client_id: str | None = None

    @property
    def query(self) -> list[tuple[str, str]]:
        """Query parameters in order, repeated names kept."""
        if self._query is None:
            try:
                self._query = parse_pairs(self.query_string, strict=False)
            except UnicodeDecodeError:
                self._query_invalid = True
                self._query = []
        if self._query_invalid:
            # Every reader gets the 400, so no handler can act on a query it could not read.
            raise HttpError(400, "Query string is not valid UTF-8")
        return self._query

    def query_value(self, name: str) -> str | None:
        """The first value of ``name``; None when absent or when the query cannot be read."""
        try:
            pairs = self.query
        except HttpError:
            return None
        for key, value in pairs:
            if key == name:
                return value
        return None

    async def body(self) -> bytes:
        """The whole body; 413 past the limit, whether announced by Content-Length or chunked."""
        if self._body is not None:
            return self._body
        declared = self.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    raise HttpError(413, f"Request body is larger than {self.max_body_bytes} bytes")
            except ValueError:
                raise HttpError(400, "Invalid Content-Length") from None
        extensions = self.scope.get("extensions")
        if extensions is not None and extensions.get(BODY_RECEIVED):
            # All of it is here already (the server says so): no deadline to keep.
            self._body = await self._read_body()
            return self._body
        try:
            # A body that never arrives would hold its connection (and a slot under the cap) forever.
            async with asyncio.timeout(self.body_timeout):
                self._body = await self._read_body()
        except TimeoutError:
            raise HttpError(
                408,
                f"The request body did not arrive within {self.body_timeout:g} s",
                headers={"Connection": "close"},
            ) from None
        return self._body

    async def _read_body(self) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                raise HttpError(400, "Client disconnected before sending the body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise HttpError(413, f"Request body is larger than {self.max_body_bytes} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def document(self) -> Any:
        """The body decoded as JSON or YAML according to Content-Type."""
        body = await self.body()
        if not body.strip():
            raise HttpError(400, "Request body is empty")
        return parse_document(
            body,
            self.headers.get("content-type"),
            max_depth=self.max_depth,
            max_nodes=max(self.max_body_bytes, 1024),
            max_bytes=self.max_body_bytes,
        )


def canonical_path(path: str) -> str:
    """``path`` without empty segments: ``//Client/x/`` is ``/Client/x``, as the router reads it; an
    AccessPolicy matching ``uri`` must see that same path, or a doubled slash would slip past it."""
    return "/" + "/".join(segment for segment in path.split("/") if segment)
