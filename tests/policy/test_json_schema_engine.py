"""The json-schema engine: draft-07 and 2020-12 schemas over the request, empty values stripped."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbox.policy.compile import compile_policy
from fhirbox.policy.request_object import StaticRequest
from fhirbox.policy.rule import PolicyError
from tests.policy.conftest import evaluate

ORGANIZATION_ONLY = {
    "type": "object",
    "required": ["params"],
    "properties": {
        "params": {
            "type": "object",
            "required": ["resource/type"],
            "properties": {"resource/type": {"const": "Organization"}},
        }
    },
}


def policy(schema: Any) -> dict[str, Any]:
    return {"engine": "json-schema", "schema": schema}


def test_draft07_schema_passes_a_matching_request() -> None:
    assert evaluate(policy(ORGANIZATION_ONLY), {"params": {"resource/type": "Organization"}})


def test_draft07_schema_fails_another_request() -> None:
    assert not evaluate(policy(ORGANIZATION_ONLY), {"params": {"resource/type": "Patient"}})


def test_2020_12_schema_is_honoured() -> None:
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "properties": {"scope": {"type": "array", "prefixItems": [{"const": "system/Patient.read"}]}},
        "required": ["scope"],
    }
    assert evaluate(policy(schema), {"scope": ["system/Patient.read", "x"]})
    assert not evaluate(policy(schema), {"scope": ["x", "system/Patient.read"]})


def test_empty_values_are_stripped_before_validation() -> None:
    requires_query = policy({"type": "object", "required": ["query-string", "jwt"]})
    assert not evaluate(requires_query, {"query-string": "", "jwt": {}})
    assert not evaluate(requires_query, {"query-string": None, "jwt": {"sub": None, "aud": []}})
    assert evaluate(requires_query, {"query-string": "a=1", "jwt": {"sub": "x"}})


def test_explain_lists_the_schema_errors() -> None:
    explained = compile_policy(policy(ORGANIZATION_ONLY)).rule.explain(StaticRequest({}))
    assert explained["result"] is False
    assert any("params" in error for error in explained["errors"])


@pytest.mark.parametrize(
    "schema",
    [{"type": "no-such-type"}, {"properties": {"a": {"pattern": "["}}}, {"required": "params"}],
    ids=["unknown type", "invalid pattern", "required not an array"],
)
def test_invalid_schema_is_rejected(schema: Any) -> None:
    with pytest.raises(PolicyError, match="schema: invalid JSON Schema"):
        compile_policy(policy(schema))


def test_remote_references_are_not_fetched() -> None:
    with pytest.raises(PolicyError, match=r"schema: \$ref 'http://127\.0\.0\.1:9/schema\.json': only local"):
        compile_policy(policy({"$ref": "http://127.0.0.1:9/schema.json"}))


def doubling(levels: int) -> dict[str, Any]:
    """A schema whose every level is an anyOf of two references to the level below: 2^levels checks
    for a request that fails them all, in a few hundred bytes."""
    definitions: dict[str, Any] = {"d0": {"type": "integer"}}
    for n in range(1, levels + 1):
        below = {"$ref": f"#/definitions/d{n - 1}"}
        definitions[f"d{n}"] = {"anyOf": [below, below]}
    return {
        "definitions": definitions,
        "properties": {"request-method": {"$ref": f"#/definitions/d{levels}"}},
    }


def test_a_schema_whose_references_fan_out_past_the_limit_is_refused_when_written() -> None:
    """Evaluated, 27 levels took 1.6 s of the event loop for every request a global policy saw; the
    schema is refused instead, and a small fan-out still works."""
    with pytest.raises(PolicyError, match="expands to more than 10000 schema nodes"):
        compile_policy(policy(doubling(27)))
    small = policy(doubling(4))
    assert not evaluate(small, {"request-method": "get"})
    assert evaluate(small, {"request-method": 1})


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        (
            {"definitions": {"a": {"items": {"$ref": "#/definitions/a"}}}, "$ref": "#/definitions/a"},
            "back into",
        ),
        ({"$defs": {"a": {"$anchor": "x"}}, "$ref": "#x"}, "only local"),
        ({"$dynamicRef": "#meta"}, "\\$dynamicRef is not allowed"),
    ],
    ids=["recursive", "anchor", "dynamic"],
)
def test_references_whose_cost_cannot_be_bounded_are_refused(schema: Any, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        compile_policy(policy(schema))


def test_schema_must_be_an_object() -> None:
    with pytest.raises(PolicyError, match="schema: must be a JSON Schema object"):
        compile_policy(policy("Organization"))


def test_schema_constraining_unnamed_keys_sees_the_whole_request() -> None:
    only_uri = policy(
        {"type": "object", "properties": {"uri": {"type": "string"}}, "additionalProperties": False}
    )
    assert evaluate(only_uri, {"uri": "/Patient", "params": {}})
    assert not evaluate(only_uri, {"uri": "/Patient", "params": {"resource/type": "Patient"}})
