"""JSON and YAML encoding and decoding, with the safety bounds a public endpoint needs."""

from __future__ import annotations

import math
from typing import Any

import orjson
import yaml

from fhirbox.http.errors import HttpError

JSON_TYPES = frozenset({"application/json", "application/fhir+json"})
YAML_TYPES = frozenset({"text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml"})
FORM_TYPE = "application/x-www-form-urlencoded"
MERGE_PATCH_TYPE = "application/merge-patch+json"
JSON_PATCH_TYPE = "application/json-patch+json"

_YAML_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Loader(_YAML_BASE):  # type: ignore[misc]
    """Safe YAML loader that keeps timestamps as strings, so YAML and JSON bodies agree."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _YAML_BASE.yaml_implicit_resolvers.items()
}


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    pass


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header value."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


# PostgreSQL text cannot hold U+0000; refusing it everywhere keeps both backends alike.
_NUL = "Strings may not contain the NUL character (U+0000)"


def check_document(document: Any, max_depth: int, max_nodes: int) -> None:
    """Reject documents that are not plain JSON values, nest too deep or expand past ``max_nodes``.

    YAML aliases share objects, so counting visited nodes bounds the expanded size ("billion laughs").
    """
    nodes = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise HttpError(413, "Document expands beyond the allowed size")
        if depth > max_depth:
            raise HttpError(400, f"Document is nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise HttpError(400, f"Object keys must be strings, got {key!r}")
                if "\x00" in key:
                    raise HttpError(400, _NUL)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise HttpError(400, _NUL)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise HttpError(400, "Numbers must be finite")
        elif value is not None and not isinstance(value, str | int | bool):
            raise HttpError(400, f"Unsupported value of type {type(value).__name__} in document")


def parse_document(body: bytes, content_type: str | None, *, max_depth: int, max_nodes: int) -> Any:
    """Decode a JSON or YAML request body; raise 400 or 415 with a clear reason."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind in (MERGE_PATCH_TYPE, JSON_PATCH_TYPE) or kind.endswith("+json"):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"Malformed JSON: {exc}") from None
    elif kind in YAML_TYPES:
        try:
            document = yaml.load(body, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
        except yaml.YAMLError as exc:
            raise HttpError(400, f"Malformed YAML: {exc}") from None
        except RecursionError:
            raise HttpError(400, f"Document is nested deeper than {max_depth} levels") from None
    elif not kind:
        raise HttpError(415, "Missing Content-Type: send application/json or text/yaml")
    else:
        raise HttpError(415, f"Unsupported Content-Type {kind!r}: send application/json or text/yaml")
    check_document(document, max_depth, max_nodes)
    return document


def dump_json(data: Any) -> bytes:
    return orjson.dumps(data)


def dump_yaml(data: Any) -> bytes:
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.encode()
