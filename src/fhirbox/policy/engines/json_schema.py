"""The ``json-schema`` engine: a JSON Schema the request object must satisfy.

As in Aidbox, empty values (``[]``, ``{}``, ``""`` and null) are removed from the request object first,
so a schema must list what it needs under ``required``. Schemas declare their draft with ``$schema``
(draft-07 and 2020-12 among others); without it they are read as draft-07, Aidbox's version. Schemas
are compiled once, never fetch remote ``$ref`` documents, and run in jsonschema-rs's compiled validator.
``pattern`` and ``patternProperties`` run on Rust's ``regex`` crate (linear time, like RE2 for matcho):
a pattern with backreferences or lookaround is refused when the policy is written.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import jsonschema_rs

from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import PolicyError, Rule, field_path

_MAX_ERRORS = 10
# Linear-time regular expressions: the default (fancy-regex) backtracks on backreferences and lookaround.
_PATTERNS = jsonschema_rs.RegexOptions()
# Top-level keywords under which only the keys named in ``properties`` and ``required`` can affect
# the result; a schema using nothing else is validated against just those keys of the request.
_KEY_LOCAL_KEYWORDS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "type", "properties", "required"}
    | {"definitions", "$defs", "default", "examples"}
)


class JsonSchemaRule(Rule):
    __slots__ = ("_is_valid", "keys", "needs_body", "validator")
    engine = "json-schema"

    def __init__(self, validator: Any, keys: tuple[str, ...] | None) -> None:
        self.validator = validator
        self._is_valid = validator.is_valid
        self.keys = keys
        self.needs_body = keys is None or "body" in keys or "resource" in keys

    def check(self, request: RequestObject) -> bool:
        return bool(self._is_valid(request.stripped(self.keys)))

    def explain(self, request: RequestObject) -> dict[str, Any]:
        instance = request.stripped(self.keys)
        errors = [_first_line(error) for error in islice(self.validator.iter_errors(instance), _MAX_ERRORS)]
        result: dict[str, Any] = {"engine": self.engine, "result": not errors}
        if errors:
            result["errors"] = errors
        return result


def compile_json_schema(rule: dict[str, Any], where: str) -> Rule:
    """Compile ``rule["schema"]``; an invalid schema is a ``PolicyError`` naming the problem."""
    schema = rule.get("schema")
    where = field_path(where, "schema")
    if not isinstance(schema, dict | bool):
        raise PolicyError(f"{where}: must be a JSON Schema object")
    try:
        if isinstance(schema, dict) and "$schema" in schema:
            validator = jsonschema_rs.validator_for(schema, offline=True, pattern_options=_PATTERNS)
        else:
            validator = jsonschema_rs.Draft7Validator(schema, offline=True, pattern_options=_PATTERNS)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise PolicyError(f"{where}: invalid JSON Schema: {_first_line(exc)}") from None
    return JsonSchemaRule(validator, _request_keys(schema))


def _request_keys(schema: dict[str, Any] | bool) -> tuple[str, ...] | None:
    """The request keys the schema can look at, or None when it may look at any of them."""
    if not isinstance(schema, dict) or not schema.keys() <= _KEY_LOCAL_KEYWORDS:
        return None
    properties = schema.get("properties", {})
    required = schema.get("required", [])
    if not isinstance(properties, dict) or not isinstance(required, list):
        return None
    return tuple(dict.fromkeys([*properties, *required]))


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None)
    text = message if isinstance(message, str) else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
