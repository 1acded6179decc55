"""The one request pipeline: route, authenticate, authorize, handle, and turn every failure into an
OperationOutcome. It is given its router, authenticator and authorizers when the app is assembled;
each route declares the access it needs (``Route.access``) and no handler repeats these checks."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from typing import Protocol

from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError, operation_outcome
from fhirbox.http.forwarded import Forwarding
from fhirbox.http.request import Receive, Request, Scope, Send
from fhirbox.http.responses import Response, error_response, render
from fhirbox.http.routing import Route, Router
from fhirbox.ids import UniqueIds
from fhirbox.logs import AccessLog, request_id
from fhirbox.metrics import UNMATCHED, Metrics
from fhirbox.storage.base import UnstorableValue

log = logging.getLogger("fhirbox.request")


class Authorizer(Protocol):
    async def authorize(self, request: Request, principal: Principal, route: Route) -> None:
        """Return when ``principal`` may make ``request``; raise a 403 ``HttpError`` otherwise."""


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
    ) -> None:
        self.router = router
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
        self.route_keys = router.param_keys

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        request = Request(
            scope,
            receive,
            max_body_bytes=self.max_body_bytes,
            body_timeout=self.body_timeout,
            max_depth=self.max_depth,
        )
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
        except HttpError as error:
            response = error_response(request, error)
        except UnstorableValue as error:
            response = error_response(request, HttpError(422, f"Invalid resource: {error}"))
        except Exception:
            log.exception("internal error in request %s %s", request.method, request.path)
            outcome = operation_outcome(
                "exception", f"Internal server error; request id {request.request_id}"
            )
            response = render(request, 500, outcome)
        return template, response

    async def respond(self, request: Request, route: Route) -> Response:
        if route.access == "public":
            return await route.handler(request, None)
        principal = await self.authenticator.authenticate(request)
        request.client_id = principal.client_id
        if route.access == "policy":
            if request.query_string:
                self.refuse_route_keys_in_query(request)
            for authorizer in self.authorizers:
                await authorizer.authorize(request, principal, route)
        elif route.access == "root" and not principal.is_root:
            raise HttpError(403, "Forbidden")
        return await route.handler(request, principal)

    def refuse_route_keys_in_query(self, request: Request) -> None:
        """400 when the query string names a key only the route may set (``resource/id``, ...), so a
        policy's ``params`` can trust them; 400 as well when the query string is not UTF-8."""
        query = request.query_string
        if "%" not in query and not any(key in query for key in self.route_keys):
            return
        for name, _ in request.query:
            if name in self.route_keys:
                raise HttpError(400, f"Query parameter {name!r} is set by the route, not the query string")
