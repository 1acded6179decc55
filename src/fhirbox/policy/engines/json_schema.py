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
from urllib.parse import unquote

import jsonpatch
import jsonschema_rs

from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import PolicyError, Rule, field_path

_MAX_ERRORS = 10
# Schema nodes a policy's schema may stand for once its ``$ref``s are followed (``_Expansion``).
MAX_EXPANDED = 10_000
# Keywords whose values are data, not schemas: a ``$ref`` key inside them is not a reference.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})
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
    _Expansion(schema, where).check()
    try:
        if isinstance(schema, dict) and "$schema" in schema:
            validator = jsonschema_rs.validator_for(schema, offline=True, pattern_options=_PATTERNS)
        else:
            validator = jsonschema_rs.Draft7Validator(schema, offline=True, pattern_options=_PATTERNS)
    except (jsonschema_rs.ValidationError, ValueError) as exc:
        raise PolicyError(f"{where}: invalid JSON Schema: {_first_line(exc)}") from None
    return JsonSchemaRule(validator, _request_keys(schema))


class _Expansion:
    """The size of a schema with every ``$ref`` written out in its place, refused past
    ``MAX_EXPANDED`` nodes: ``$ref``s let a 2 KB schema stand for 2^27 checks (each level an ``anyOf``
    of two references to the level below), which a request then pays for on the event loop. Sizes of
    references are counted once (memoised), so the count itself is linear in the schema. Only
    references this can follow are allowed: local JSON pointers (``#/...``), and none back into
    themselves (a recursive schema's cost grows with the request's nesting)."""

    def __init__(self, schema: Any, where: str) -> None:
        self.root = schema
        self.where = where
        self.sizes: dict[str, int] = {}
        self.following: set[str] = set()

    def check(self) -> None:
        if self.size(self.root) > MAX_EXPANDED:
            raise PolicyError(
                f"{self.where}: expands to more than {MAX_EXPANDED} schema nodes once its $refs are"
                " followed; write the checks out without $ref fan-out"
            )

    def size(self, node: Any) -> int:
        if isinstance(node, list):
            total = 0
            for item in node:
                total += self.size(item)
                if total > MAX_EXPANDED:
                    break
            return total
        if not isinstance(node, dict):
            return 1
        for keyword in ("$dynamicRef", "$recursiveRef"):
            if keyword in node:
                raise PolicyError(f"{self.where}: {keyword} is not allowed in a policy's schema")
        total = 1
        ref = node.get("$ref")
        if isinstance(ref, str):
            total += self.referenced(ref)
        for key, value in node.items():
            if total > MAX_EXPANDED:
                break
            if key not in _DATA_KEYWORDS:
                total += self.size(value)
        return total

    def referenced(self, ref: str) -> int:
        if ref in self.sizes:
            return self.sizes[ref]
        if not ref.startswith("#/") and ref != "#":
            raise PolicyError(f"{self.where}: $ref {ref[:100]!r}: only local references (#/...) are allowed")
        if ref in self.following:
            raise PolicyError(f"{self.where}: $ref {ref[:100]!r} refers back into itself")
        try:
            target = jsonpatch.JsonPointer(unquote(ref[1:])).resolve(self.root)
        except (jsonpatch.JsonPointerException, TypeError, KeyError, IndexError):
            return 1  # not found: the validator's compiler names it
        self.following.add(ref)
        size = self.sizes[ref] = self.size(target)
        self.following.discard(ref)
        return size


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
