"""Search parameters to a ``SearchQuery``, and results to a FHIR ``Bundle``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fhirbox.http.errors import HttpError
from fhirbox.storage.base import INSTANT_FIELDS, PATH_KEY, Comparison, Filter, SearchQuery, SortKey

DEFAULT_COUNT = 100
MAX_COUNT = 1000
MAX_PAGE = 1_000_000  # keeps offsets inside a 64-bit integer
# Bounds on one search's work (and on what SQLite can compile: joins and expression depth).
MAX_PATH_KEYS = 16
MAX_FILTERS = 100
MAX_IDS = 1000
_PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le")
_CONTROL = frozenset({"_count", "_page", "_sort", "_elements", "_id", "_lastUpdated", "_format", "_total"})


def parse_path(text: str, what: str) -> tuple[str, ...]:
    keys = tuple(text.split("."))
    if not all(PATH_KEY.match(key) for key in keys):
        raise HttpError(400, f"Invalid {what} {text!r}: use dotted field names like client.id")
    if len(keys) > MAX_PATH_KEYS:
        raise HttpError(400, f"Invalid {what} {text[:200]!r}: at most {MAX_PATH_KEYS} dotted names")
    return keys


def positive_int(name: str, value: str, maximum: int | None = None) -> int:
    """``value`` as an integer from 1 to ``maximum``; 400 otherwise."""
    try:
        number = int(value) if value.isascii() and value.isdigit() else -1
    except ValueError:
        raise HttpError(400, f"{name} must be a positive integer, got {value!r}") from None
    if number < 1 or (maximum is not None and number > maximum):
        limit = f" and at most {maximum}" if maximum else ""
        raise HttpError(400, f"{name} must be at least 1{limit}, got {value!r}")
    return number


def _instant(value: str) -> str:
    """A date or date-time in any ISO 8601 form, as the store's fixed-width UTC text."""
    text = value.strip()
    try:
        if len(text) == 10:
            moment = datetime.fromisoformat(text).replace(tzinfo=UTC)
        else:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except (ValueError, OverflowError):
        raise HttpError(400, f"Invalid date {value!r}: use ISO 8601, e.g. 2024-01-31T12:00:00Z") from None


def _date_comparisons(field: str, value: str) -> list[Comparison]:
    """``value`` (an ISO 8601 date or instant, with an optional ``eq``/``ne``/``gt``/``lt``/``ge``/``le``
    prefix) as comparisons of ``field``; a bare day means that whole day."""
    prefix, rest = (value[:2], value[2:]) if value[:2] in _PREFIXES else ("eq", value)
    if prefix == "eq" and len(rest.strip()) == 10:
        day = _instant(rest)
        return [Comparison(field, "ge", day), Comparison(field, "le", day[:10] + "T23:59:59.999999Z")]
    return [Comparison(field, prefix, _instant(rest))]


class SearchRequest:
    """A parsed search: the store query, plus paging and projection for the response."""

    def __init__(self, params: list[tuple[str, str]], hidden_fields: tuple[str, ...] = ()) -> None:
        self.count = DEFAULT_COUNT
        self.page = 1
        self.elements: tuple[list[tuple[str, ...]], list[tuple[str, ...]]] | None = None
        self.params = params
        count_total = True
        filters: list[Filter] = []
        comparisons: list[Comparison] = []
        ids: list[str] = []
        sort: list[SortKey] = []
        for name, value in params:
            if name.startswith("_"):
                if name not in _CONTROL:
                    raise HttpError(400, f"Unknown search parameter {name!r}")
                if name == "_count":
                    self.count = positive_int("_count", value, MAX_COUNT)
                elif name == "_page":
                    self.page = positive_int("_page", value, MAX_PAGE)
                elif name == "_sort":
                    keys = self._sort_keys(value)
                    if any(key.path[0] in hidden_fields for key in keys):
                        raise HttpError(400, f"Sorting on {value!r} is not allowed")
                    sort.extend(keys)
                elif name == "_elements":
                    self.elements = self._elements(value)
                elif name == "_total":
                    if value not in ("none", "estimate", "accurate"):
                        raise HttpError(400, f"_total must be none, estimate or accurate, got {value!r}")
                    count_total = value != "none"
                elif name == "_id":
                    ids.extend(part for part in value.split(",") if part)
                elif name == "_lastUpdated":
                    comparisons.extend(_date_comparisons("lastUpdated", value))
                continue
            if name in INSTANT_FIELDS and name not in hidden_fields:
                comparisons.extend(_date_comparisons(name, value))
                continue
            path = parse_path(name, "search parameter")
            if path[0] in hidden_fields:
                raise HttpError(400, f"Search on {name!r} is not allowed")
            filters.append(Filter(path, value))
        if len(filters) + len(comparisons) + len(sort) > MAX_FILTERS:
            raise HttpError(400, f"Too many search parameters: at most {MAX_FILTERS} filters and sort keys")
        if len(ids) > MAX_IDS:
            raise HttpError(400, f"Too many ids in _id: at most {MAX_IDS}")
        self.query = SearchQuery(
            filters=filters,
            comparisons=comparisons,
            ids=ids,
            sort=sort,
            limit=self.count,
            offset=(self.page - 1) * self.count,
            total=count_total,
        )

    @staticmethod
    def _sort_keys(value: str) -> list[SortKey]:
        keys = []
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            descending = part.startswith("-")
            name = part[1:] if descending else part
            if name in ("_id", "_lastUpdated"):
                keys.append(SortKey((name,), descending))
            else:
                keys.append(SortKey(parse_path(name, "sort key"), descending))
        return keys

    @staticmethod
    def _elements(value: str) -> tuple[list[tuple[str, ...]], list[tuple[str, ...]]]:
        include: list[tuple[str, ...]] = []
        exclude: list[tuple[str, ...]] = []
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if part.startswith("-"):
                exclude.append(parse_path(part[1:], "element"))
            else:
                include.append(parse_path(part, "element"))
        return include, exclude

    def project(self, resource: dict[str, Any]) -> dict[str, Any]:
        """Apply ``_elements``: keep the named paths (plus resourceType, id, meta), drop ``-`` ones."""
        if self.elements is None:
            return resource
        include, exclude = self.elements
        if include:
            result: dict[str, Any] = {
                key: resource[key] for key in ("resourceType", "id", "meta") if key in resource
            }
            for path in include:
                _copy_path(resource, result, path)
        else:
            result = _deep_copy_dicts(resource)
        for path in exclude:
            _drop_path(result, path)
        return result

    def link(self, base: str, page: int) -> str:
        params = [(k, v) for k, v in self.params if k != "_page"]
        params.append(("_page", str(page)))
        return f"{base}?{urlencode(params)}"


def _copy_path(source: dict[str, Any], target: dict[str, Any], path: tuple[str, ...]) -> None:
    key = path[0]
    if key not in source:
        return
    if len(path) == 1 or not isinstance(source[key], dict):
        target[key] = source[key]
        return
    child = target.setdefault(key, {})
    if isinstance(child, dict):
        _copy_path(source[key], child, path[1:])


def _drop_path(target: dict[str, Any], path: tuple[str, ...]) -> None:
    node: Any = target
    for key in path[:-1]:
        node = node.get(key) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)


def _deep_copy_dicts(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy_dicts(v) if isinstance(v, dict) else v for k, v in value.items()}


def searchset(
    search: SearchRequest, resources: list[dict[str, Any]], total: int | None, base: str
) -> dict[str, Any]:
    """A ``searchset`` Bundle with ``self``, ``first``, ``next`` and ``previous`` links. Without a
    ``total`` (``_total=none``) a full page has a ``next`` link, which may lead to an empty page."""
    links = [
        {"relation": "self", "url": search.link(base, search.page)},
        {"relation": "first", "url": search.link(base, 1)},
    ]
    more = len(resources) >= search.count if total is None else search.page * search.count < total
    if more:
        links.append({"relation": "next", "url": search.link(base, search.page + 1)})
    if search.page > 1:
        links.append({"relation": "previous", "url": search.link(base, search.page - 1)})
    counted = {"total": total} if total is not None else {}
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        **counted,
        "link": links,
        "entry": [
            {
                "resource": resource,
                "fullUrl": f"{base}/{resource.get('id')}",
                "search": {"mode": "match"},
            }
            for resource in resources
        ],
    }
