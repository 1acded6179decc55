"""Maps a method and path to a route: literal segments win over ``{param}`` segments."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from fhirbox.http.errors import HttpError

if TYPE_CHECKING:
    from fhirbox.auth.principal import Principal
    from fhirbox.http.request import Request
    from fhirbox.http.responses import Response

# Route parameters as a request's ``params`` name them (Aidbox's names); others keep their own.
PARAM_KEYS = {"type": "resource/type", "id": "resource/id"}

Handler = Callable[["Request", "Principal | None"], Awaitable["Response"]]


Access = Literal["public", "authenticated", "policy", "root", "console"]
# The FHIR interaction a resource route performs, as scopes name them: ``upsert`` is a PUT, which
# creates or updates depending on what is stored when it is written.
Interaction = Literal["create", "read", "update", "upsert", "delete", "search"]


@dataclass(frozen=True, slots=True)
class Route:
    """A handler and what the pipeline must establish before calling it (``access``):

    - ``public``: nothing (health, discovery, and the token and revocation endpoints, which
      authenticate clients by the OAuth rules themselves);
    - ``authenticated``: a principal, whatever the policies say (``DELETE /Session`` on one's own token);
    - ``policy``: a principal that an AccessPolicy allows (every resource route);
    - ``root``: the root client only (``/auth/test-policy`` reads any Client and policy);
    - ``console``: a signed-in console session (its cookie, not an ``Authorization`` header) of a
      client that may use the console (root, or one an AccessPolicy allows ``GET /ui``); a POST also
      needs the session's CSRF token (``fhirbox.console.sessions``).

    ``interaction`` is what a resource route does to resources of its ``{type}`` (None on other
    routes): SMART scopes are checked against it.
    """

    handler: Handler
    access: Access = "policy"
    interaction: Interaction | None = None
    # The path template the router added it under (``/{type}/{id}``): the route label of metrics.
    template: str = ""


@dataclass(slots=True)
class _Pattern:
    segments: tuple[str, ...]
    routes: dict[str, Route]

    @property
    def literal_count(self) -> int:
        return sum(1 for s in self.segments if not s.startswith("{"))


class Router:
    def __init__(self) -> None:
        self._exact: dict[str, dict[str, Route]] = {}
        self._patterns: dict[int, list[_Pattern]] = {}
        self._constraints: dict[str, re.Pattern[str]] = {}

    def add(self, method: str, path: str, route: Route) -> None:
        route = dataclasses.replace(route, template=path)
        segments = tuple(path.strip("/").split("/")) if path != "/" else ()
        if not any(s.startswith("{") for s in segments):
            self._exact.setdefault(path, {})[method] = route
            return
        patterns = self._patterns.setdefault(len(segments), [])
        for pattern in patterns:
            if pattern.segments == segments:
                pattern.routes[method] = route
                return
        patterns.append(_Pattern(segments, {method: route}))
        patterns.sort(key=lambda p: -p.literal_count)

    @property
    def param_keys(self) -> frozenset[str]:
        """Every ``params`` key a route sets (``resource/type``, ``resource/id``, ``vid``): only the
        matched route may set them, never a query string."""
        return frozenset(
            PARAM_KEYS.get(segment[1:-1], segment[1:-1])
            for patterns in self._patterns.values()
            for pattern in patterns
            for segment in pattern.segments
            if segment.startswith("{")
        )

    def constrain(self, name: str, pattern: re.Pattern[str]) -> None:
        """Let ``{name}`` match only segments that ``pattern`` matches (e.g. resource type names)."""
        self._constraints[name] = pattern

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` and ``path`` with its parameters; 404 or 405 otherwise.

        A literal route (``DELETE /Session``) shadows a pattern (``GET /{type}``) only for its own
        methods; a literal path no pattern serves answers 405 for other methods (``GET /auth/token``).
        """
        exact = self._exact.get(path)
        if exact is not None and method in exact:
            return exact[method], {}
        found = self._match_pattern(path)
        if found is not None and (exact is None or method in found[0].routes):
            return self._pick(found[0].routes, method, path), found[1]
        if exact is not None:
            return self._pick(exact, method, path), {}
        raise HttpError(404, f"No route for {method} {path}")

    def _match_pattern(self, path: str) -> tuple[_Pattern, dict[str, str]] | None:
        segments = path.strip("/").split("/")
        for pattern in self._patterns.get(len(segments), ()):
            params: dict[str, str] = {}
            for expected, actual in zip(pattern.segments, segments, strict=True):
                if expected.startswith("{"):
                    name = expected[1:-1]
                    rule = self._constraints.get(name)
                    if not actual or (rule is not None and not rule.match(actual)):
                        break
                    params[name] = actual
                elif expected != actual:
                    break
            else:
                return pattern, params
        return None

    @staticmethod
    def _pick(routes: dict[str, Route], method: str, path: str) -> Route:
        route = routes.get(method)
        if route is None:
            allowed = ", ".join(sorted(routes))
            raise HttpError(405, f"Method {method} is not allowed on {path}", headers={"Allow": allowed})
        return route
