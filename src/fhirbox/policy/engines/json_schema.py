"""The ``json-schema`` engine: a JSON Schema the request object must satisfy.

As in Aidbox, empty values (``[]``, ``{}``, ``""`` and null) are removed from the request object first,
so a schema must list what it needs under ``required``. Schemas declare their draft with ``$schema``
(draft-07 and 2020-12 among others); without it they are read as draft-07, Aidbox's version. Schemas
are compiled once, never fetch remote ``$ref`` documents, and run in jsonschema-rs's compiled validator.
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import jsonschema_rs

from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import PolicyError, Rule, field_path

_MAX_ERRORS = 10


class JsonSchemaRule(Rule):
    __slots__ = ("_is_valid", "validator")
    engine = "json-schema"
    # The schema sees the whole request object, which includes the body of a write.
    needs_body = True

    def __init__(self, validator: Any) -> None:
        self.validator = validator
        self._is_valid = validator.is_valid

    def check(self, request: RequestObject) -> bool:
        return bool(self._is_valid(strip_empty(request.to_dict()) or {}))

    def explain(self, request: RequestObject) -> dict[str, Any]:
        instance = strip_empty(request.to_dict()) or {}
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
            validator = jsonschema_rs.validator_for(schema, offline=True)
        else:
            validator = jsonschema_rs.Draft7Validator(schema, offline=True)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise PolicyError(f"{where}: invalid JSON Schema: {_first_line(exc)}") from None
    return JsonSchemaRule(validator)


def strip_empty(value: Any) -> Any:
    """``value`` without empty arrays, objects, strings and nulls, at any depth (None if all empty)."""
    if isinstance(value, dict):
        stripped = {}
        for key, item in value.items():
            item = strip_empty(item)
            if item is not None:
                stripped[key] = item
        return stripped or None
    if isinstance(value, list):
        items = [item for item in (strip_empty(element) for element in value) if item is not None]
        return items or None
    if value == "":
        return None
    return value


def _first_line(error: Exception) -> str:
    message = getattr(error, "message", None)
    text = message if isinstance(message, str) else str(error)
    return text.strip().splitlines()[0] if text.strip() else type(error).__name__
