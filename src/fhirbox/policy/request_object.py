"""The request object policies see, with Aidbox's keys.

Building the whole object for every request would cost more than evaluating most policies, so
``RequestView`` computes each key the first time a policy asks for it. The body is the one part that
needs I/O; the authorizer loads it beforehand, and only when an applicable policy can look at it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.routing import PARAM_KEYS
from fhirbox.models import client, session

# Every key a request object can have (Aidbox's names).
KEYS = (
    "request-method",
    "scheme",
    "uri",
    "query-string",
    "params",
    "body",
    "resource",
    "headers",
    "remote-addr",
    "client",
    "jwt",
    "session",
    "scope",
)
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH"})
_UNSET: Any = object()
# Credentials never shown to policies, even as hashes.
_HIDDEN_HEADERS = ("authorization",)
_HIDDEN_CLIENT_FIELDS = client.HIDDEN_FIELDS
_HIDDEN_SESSION_FIELDS = session.HIDDEN_FIELDS


class RequestObject:
    """What a compiled policy evaluates: ``get(key)`` for one key, ``to_dict()`` for all of them."""

    __slots__ = ()

    def get(self, key: str) -> Any:
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def stripped(self, keys: Iterable[str] | None) -> dict[str, Any]:
        """``keys`` (all when None) with empty values removed at any depth, as json-schema sees them."""
        result = {}
        for key in KEYS if keys is None else keys:
            value = strip_empty(self.get(key))
            if value is not None:
                result[key] = value
        return result


class StaticRequest(RequestObject):
    """A request object given as a plain dict (``POST /auth/test-policy``, ``fhirbox policy check``)."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def to_dict(self) -> dict[str, Any]:
        return self._data


class RequestView(RequestObject):
    """The request object of a live request, built key by key on first use and then kept."""

    __slots__ = ("_document", "_stripped", "_values", "principal", "request")

    def __init__(self, request: Request, principal: Principal) -> None:
        self.request = request
        self.principal = principal
        self._values: dict[str, Any] = {}
        self._stripped: dict[str, Any] = {}
        self._document: Any = None

    async def load_body(self) -> None:
        """Parse the body of a write so ``body`` and ``resource`` can be matched.

        A body that cannot be parsed is simply absent here: the handler answers the 400 if a policy
        lets the request through, and a denied client learns nothing about its body.
        """
        if self.request.method not in WRITE_METHODS:
            return
        try:
            self._document = await self.request.document()
        except HttpError:
            self._document = None
        for key in ("body", "resource"):
            self._values.pop(key, None)
            self._stripped.pop(key, None)

    def get(self, key: str) -> Any:
        value = self._values.get(key, _UNSET)
        if value is not _UNSET:
            return value
        builder = _BUILDERS.get(key)
        value = builder(self) if builder is not None else None
        self._values[key] = value
        return value

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key in KEYS if (value := self.get(key)) is not None}

    def stripped(self, keys: Iterable[str] | None) -> dict[str, Any]:
        # Several json-schema policies may look at the same keys: strip each key once per request.
        cache = self._stripped
        result = {}
        for key in KEYS if keys is None else keys:
            value = cache.get(key, _UNSET)
            if value is _UNSET:
                value = cache[key] = strip_empty(self.get(key))
            if value is not None:
                result[key] = value
        return result


def strip_empty(value: Any) -> Any:
    """``value`` without empty arrays, objects, strings and nulls at any depth; None if nothing is left."""
    kind = type(value)
    if kind is dict:
        stripped = {}
        for key, item in value.items():
            if type(item) in _CONTAINERS:
                item = strip_empty(item)
            if item is not None and item != "":
                stripped[key] = item
        return stripped or None
    if kind is list:
        items = []
        for item in value:
            if type(item) in _CONTAINERS:
                item = strip_empty(item)
            if item is not None and item != "":
                items.append(item)
        return items or None
    if value == "":
        return None
    return value


_CONTAINERS = (dict, list)


def _query_pairs(view: RequestView) -> list[tuple[str, str]]:
    query_string = view.request.query_string
    if "%" not in query_string and "+" not in query_string:
        # The common case needs no decoding; splitting by hand is several times faster.
        pairs = []
        for part in query_string.split("&"):
            if part:
                name, _, value = part.partition("=")
                pairs.append((name, value))
        return pairs
    try:
        return view.request.query
    except HttpError:
        return []  # not UTF-8: the handler answers 400 if the request gets that far


def _params(view: RequestView) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if view.request.query_string:
        for name, value in _query_pairs(view):
            previous = params.get(name)
            if previous is None:
                params[name] = value
            elif isinstance(previous, list):
                previous.append(value)
            else:
                params[name] = [previous, value]
    for name, value in view.request.path_params.items():
        params[PARAM_KEYS.get(name, name)] = value
    return params


def _without(data: dict[str, Any] | None, hidden: tuple[str, ...]) -> dict[str, Any] | None:
    if data is None:
        return None
    copy = None
    for name in hidden:
        if name in data:
            if copy is None:
                copy = dict(data)
            del copy[name]
    return data if copy is None else copy


def _scheme(view: RequestView) -> str:
    return str(view.request.scope.get("scheme", "http"))


def _body(view: RequestView) -> Any:
    return view._document


_BUILDERS: dict[str, Callable[[RequestView], Any]] = {
    "request-method": lambda view: view.request.method.lower(),
    "scheme": _scheme,
    "uri": lambda view: view.request.path,
    "query-string": lambda view: view.request.query_string or None,
    "params": _params,
    "body": _body,
    "resource": _body,
    "headers": lambda view: _without(view.request.headers, _HIDDEN_HEADERS),
    "remote-addr": lambda view: view.request.client_addr or None,
    "client": lambda view: _without(view.principal.client, _HIDDEN_CLIENT_FIELDS),
    "jwt": lambda view: view.principal.jwt,
    "session": lambda view: _without(view.principal.session, _HIDDEN_SESSION_FIELDS),
    "scope": lambda view: list(view.principal.scope),
}
