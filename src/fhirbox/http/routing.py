"""Maps a method and path to a route: literal segments win over ``{param}`` segments."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fhirbox.http.errors import HttpError

if TYPE_CHECKING:
    from fhirbox.auth.principal import Principal
    from fhirbox.http.request import Request
    from fhirbox.http.responses import Response

Handler = Callable[["Request", "Principal | None"], Awaitable["Response"]]


@dataclass(frozen=True, slots=True)
class Route:
    """A handler and what the pipeline must do before calling it.

    ``public`` routes skip authentication (health, discovery, the token endpoint, which
    authenticates clients itself); ``authorize=False`` routes need a principal but no policy.
    """

    handler: Handler
    operation: str
    public: bool = False
    authorize: bool = True


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

    def add(self, method: str, path: str, route: Route) -> None:
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

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        """The route for ``method`` and ``path`` with its parameters; 404 or 405 otherwise."""
        exact = self._exact.get(path)
        if exact is not None and (method in exact or not self._has_pattern_for(method, path)):
            # A literal route (DELETE /Session) shadows a pattern (GET /{type}) only for its methods.
            return self._pick(exact, method, path), {}
        segments = path.strip("/").split("/")
        for pattern in self._patterns.get(len(segments), ()):
            params: dict[str, str] = {}
            for expected, actual in zip(pattern.segments, segments, strict=True):
                if expected.startswith("{"):
                    if not actual:
                        break
                    params[expected[1:-1]] = actual
                elif expected != actual:
                    break
            else:
                return self._pick(pattern.routes, method, path), params
        raise HttpError(404, f"No route for {method} {path}")

    def _has_pattern_for(self, method: str, path: str) -> bool:
        segments = path.strip("/").split("/")
        for pattern in self._patterns.get(len(segments), ()):
            if all(
                (expected.startswith("{") and actual) or expected == actual
                for expected, actual in zip(pattern.segments, segments, strict=True)
            ):
                return method in pattern.routes
        return False

    @staticmethod
    def _pick(routes: dict[str, Route], method: str, path: str) -> Route:
        route = routes.get(method)
        if route is None:
            allowed = ", ".join(sorted(routes))
            raise HttpError(405, f"Method {method} is not allowed on {path}", headers={"Allow": allowed})
        return route
