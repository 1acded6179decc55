"""The one request pipeline: route, authenticate, authorize, handle, and turn every failure into an
OperationOutcome. It is given its router, authenticator and authorizers when the app is assembled;
each route declares the access it needs (``Route.access``) and no handler repeats these checks."""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections.abc import Sequence
from typing import Protocol

from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError, operation_outcome
from fhirbox.http.forwarded import Forwarding
from fhirbox.http.request import Receive, Request, Scope, Send
from fhirbox.http.responses import Response, error_response, render
from fhirbox.http.routing import Route, Router
from fhirbox.storage.base import UnstorableValue

log = logging.getLogger("fhirbox.request")


class Authorizer(Protocol):
    async def authorize(self, request: Request, principal: Principal, route: Route) -> None:
        """Return when ``principal`` may make ``request``; raise a 403 ``HttpError`` otherwise."""


class RequestIds:
    """Cheap unique request ids: a random per-process prefix and a counter."""

    def __init__(self) -> None:
        self._prefix = f"{os.getpid():x}{secrets.token_hex(3)}"
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}-{next(self._counter)}"


class Pipeline:
    """Runs every request through routing, authentication, authorization and its handler."""

    def __init__(
        self,
        router: Router,
        authenticator: Authenticator,
        authorizers: Sequence[Authorizer],
        forwarding: Forwarding,
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
        self.max_body_bytes = max_body_bytes
        self.max_depth = max_depth
        self.body_timeout = body_timeout
        self.ids = RequestIds()
        self.route_keys = router.param_keys

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(
            scope,
            receive,
            max_body_bytes=self.max_body_bytes,
            body_timeout=self.body_timeout,
            max_depth=self.max_depth,
            request_id=self.ids.next(),
        )
        self.forwarding.apply(request)
        try:
            response = await self.respond(request)
        except HttpError as error:
            response = error_response(request, error)
        except UnstorableValue as error:
            response = error_response(request, HttpError(422, f"Invalid resource: {error}"))
        except Exception:
            log.exception(
                "internal error in request %s %s %s", request.request_id, request.method, request.path
            )
            outcome = operation_outcome(
                "exception", f"Internal server error; request id {request.request_id}"
            )
            response = render(request, 500, outcome, {"X-Request-Id": request.request_id})
        await response.send(send)

    async def respond(self, request: Request) -> Response:
        route, params = self.router.match(request.method, request.path)
        request.path_params = params
        if route.access == "public":
            return await route.handler(request, None)
        principal = await self.authenticator.authenticate(request)
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
