"""The one request pipeline: route, authenticate, authorize, handle, and turn every failure into an
OperationOutcome. It is given its router, authenticator and authorizers when the app is assembled;
each route declares the access it needs (``Route.access``) and no handler repeats these checks.

Two callers use it besides HTTP: the admin console's pages, authenticated by the console's cookie
(``ConsoleGate``, the ``console`` access kind), and the requests those pages make as the signed-in
client (``Pipeline.call``), which run the same routing, authorization and handlers as API calls.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterable, Sequence
from functools import cached_property
from typing import Protocol
from urllib.parse import urlencode

from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.forwarded import Forwarding
from fhirbox.http.request import BODY_RECEIVED, Receive, Request, Scope, Send
from fhirbox.http.responses import Response, error_response
from fhirbox.http.routing import Route, Router
from fhirbox.ids import UniqueIds
from fhirbox.logs import AccessLog, request_id
from fhirbox.metrics import UNMATCHED, Metrics
from fhirbox.storage.base import QueryTooCostly, UnstorableValue

log = logging.getLogger("fhirbox.request")


class Authorizer(Protocol):
    async def authorize(self, request: Request, principal: Principal, route: Route) -> None:
        """Return when ``principal`` may make ``request``; raise a 403 ``HttpError`` otherwise."""


class ConsoleGate(Protocol):
    """The admin console as the pipeline sees it: which paths are its own, who a console request is
    (its session cookie), and how its failures look (HTML pages, not OperationOutcomes)."""

    def owns(self, path: str) -> bool:
        """Whether ``path`` is a console path (its failures are rendered by ``error_response``)."""

    async def authenticate(self, request: Request) -> Principal:
        """The principal of the request's console session, or a 401/403 ``HttpError``."""

    def error_response(self, request: Request, error: HttpError) -> Response:
        """The console's page for ``error``."""


# The request a client must be allowed to make to use the console (AccessPolicies decide it).
CONSOLE_ENTRY = ("GET", "/ui")


# An incoming X-Request-Id is kept when it is 1-128 of these characters, and replaced otherwise.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


class Pipeline:
    """Runs every request through routing, authentication, authorization and its handler."""

    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        authorizers: Sequence[Authorizer],
        forwarding: Forwarding,
        metrics: Metrics,
        access_log: AccessLog | None,
        *,
        max_body_bytes: int,
        max_depth: int,
        body_timeout: float,
        console: ConsoleGate | None = None,
    ) -> None:
        self.router = router
        self.console = console
        self.authenticator = authenticator
        # Policy routes run every one, in order (SMART scopes, then AccessPolicies): all must allow.
        self.authorizers = tuple(authorizers)
        self.forwarding = forwarding
        self.metrics = metrics
        self.access_log = access_log
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.body_timeout = body_timeout
        self.ids = UniqueIds()

    @cached_property
    def route_keys(self) -> frozenset[str]:
        """Read at the first request, once every route (the console's too) is added."""
        return self.router.param_keys

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = self.request(scope, receive)
        incoming = request.headers.get("x-request-id")
        # The client's X-Request-Id when well-formed, else a new id.
        keep = incoming is not None and _REQUEST_ID.fullmatch(incoming) is not None
        request.request_id = rid = incoming if keep and incoming is not None else self.ids.next()
        # Every line logged while this request is handled names it (logs.RequestIdFilter).
        context = request_id.set(rid)
        try:
            self.forwarding.apply(request)
            template, response = await self.answer(request)
            response.headers.append((b"x-request-id", rid.encode()))
            await response.send(send)
            elapsed = time.perf_counter() - started
            self.metrics.request(template, request.method, response.status, elapsed)
            if self.access_log is not None:
                self.access_log.write(request, response.status, len(response.body), elapsed)
        finally:
            request_id.reset(context)

    async def answer(self, request: Request) -> tuple[str, Response]:
        """The route template matched (``UNMATCHED`` when none) and the response, errors included."""
        template = UNMATCHED
        try:
            route, request.path_params = self.router.match(request.method, request.path)
            template = route.template
            response = await self.respond(request, route)
        except _ANSWERED as error:
            response = self.failure(request, _http_error(error))
        except Exception:
            log.exception("internal error in request %s %s", request.method, request.path)
            diagnostics = f"Internal server error; request id {request.request_id}"
            response = self.failure(request, HttpError(500, diagnostics, code="exception"))
        return template, response

    def failure(self, request: Request, error: HttpError) -> Response:
        if self.console is not None and self.console.owns(request.path):
            return self.console.error_response(request, error)
        return error_response(request, error)

    async def respond(self, request: Request, route: Route) -> Response:
        if route.access == "public":
            return await route.handler(request, None)
        if route.access == "console":
            assert self.console is not None, "console routes are added only with a console"
            principal = await self.console.authenticate(request)
        else:
            principal = await self.authenticator.authenticate(request)
        request.client_id = principal.client_id
        await self.check_access(request, principal, route)
        return await route.handler(request, principal)

    async def check_access(self, request: Request, principal: Principal, route: Route) -> None:
        """403 unless ``principal`` has the access ``route`` needs (its identity is already proven)."""
        if route.access == "policy":
            if request.query_string:
                self.refuse_route_keys_in_query(request)
            for authorizer in self.authorizers:
                await authorizer.authorize(request, principal, route)
        elif route.access == "root" and not principal.is_root:
            raise HttpError(403, "Forbidden")
        elif route.access == "console" and not await self.may_use_console(principal, request):
            raise HttpError(403, "This client may not use the console: no AccessPolicy allows it GET /ui")

    async def may_use_console(self, principal: Principal, origin: Request) -> bool:
        """Whether the policies allow ``principal`` the request ``GET /ui`` (root always may)."""
        if principal.is_root:
            return True
        method, path = CONSOLE_ENTRY
        entry = self.internal_request(origin, method, path, (), b"", None)
        try:
            for authorizer in self.authorizers:
                await authorizer.authorize(entry, principal, Route(_no_handler))
        except HttpError:
            return False
        return True

    async def call(
        self,
        principal: Principal | None,
        origin: Request,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        content_type: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
    ) -> Response:
        """Make a request inside the server as ``principal`` (already authenticated; None: nobody, for
        public routes) and answer it as the API would: the same routing, access checks (policies
        included) and handler, every failure as its OperationOutcome (JSON). ``origin`` is the
        request this one is made for: its client address and base URL are this one's too."""
        request = self.internal_request(origin, method, path, query, body, content_type, headers)
        try:
            route, params = self.router.match(method, path)
            request.path_params = params
            if route.access == "public":
                return await route.handler(request, None)
            if route.access == "console" or principal is None:
                raise HttpError(403, f"{method} {path} cannot be called from inside the server")
            await self.check_access(request, principal, route)
            return await route.handler(request, principal)
        except _ANSWERED as error:
            return error_response(request, _http_error(error))

    def request(self, scope: Scope, receive: Receive, request_id: str = "") -> Request:
        """A request under this server's limits (body size, nesting, body deadline)."""
        return Request(
            scope,
            receive,
            max_body_bytes=self.max_body_bytes,
            body_timeout=self.body_timeout,
            max_depth=self.max_depth,
            request_id=request_id,
        )

    def internal_request(
        self,
        origin: Request,
        method: str,
        path: str,
        query: Iterable[tuple[str, str]],
        body: bytes,
        content_type: str | None,
        extra_headers: Iterable[tuple[str, str]] = (),
    ) -> Request:
        """A request made inside the server for ``origin``: JSON answers, its body already at hand."""
        headers = [(b"accept", b"application/json")]
        if content_type is not None:
            headers.append((b"content-type", content_type.encode("latin-1", "replace")))
        if body:
            headers.append((b"content-length", str(len(body)).encode()))
        # A value from a form (a console page's ETag) may hold what a header cannot: it is sent as
        # "?", which matches nothing (a stale ETag: 412), rather than failing the request.
        headers.extend(
            (name.lower().encode("latin-1"), value.encode("latin-1", "replace"))
            for name, value in extra_headers
        )
        scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": urlencode(list(query)).encode(),
            "headers": headers,
            "client": origin.scope.get("client"),
            "extensions": {BODY_RECEIVED: True},  # the body is at hand: no deadline to keep
        }

        async def receive() -> dict[str, object]:
            return {"type": "http.request", "body": body, "more_body": False}

        request = self.request(scope, receive, origin.request_id)
        request.client_addr = origin.client_addr
        request.base_url = origin.base_url
        return request

    def refuse_route_keys_in_query(self, request: Request) -> None:
        """400 when the query string names a key only the route may set (``resource/id``, ...), so a
        policy's ``params`` can trust them; 400 as well when the query string is not UTF-8."""
        query = request.query_string
        if "%" not in query and not any(key in query for key in self.route_keys):
            return
        for name, _ in request.query:
            if name in self.route_keys:
                raise HttpError(400, f"Query parameter {name!r} is set by the route, not the query string")


# What a handler may raise that is answered as the client's error (``_http_error``), not a 500.
_ANSWERED = (HttpError, UnstorableValue, QueryTooCostly)


def _http_error(error: HttpError | UnstorableValue | QueryTooCostly) -> HttpError:
    """The answer to a failure a handler may raise: its own, 422 for a body no backend can hold, 400
    for a search the database gave up on."""
    if isinstance(error, UnstorableValue):
        return HttpError(422, f"Invalid resource: {error}")
    if isinstance(error, QueryTooCostly):
        return HttpError(400, str(error))
    return error


async def _no_handler(request: Request, principal: Principal | None) -> Response:
    raise HttpError(404, "Not a route")
