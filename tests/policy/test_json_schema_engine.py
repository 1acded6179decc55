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
    with pytest.raises(PolicyError, match="schema: invalid JSON Schema"):
        compile_policy(policy({"$ref": "http://127.0.0.1:9/schema.json"}))


def test_schema_must_be_an_object() -> None:
    with pytest.raises(PolicyError, match="schema: must be a JSON Schema object"):
        compile_policy(policy("Organization"))


def test_schema_constraining_unnamed_keys_sees_the_whole_request() -> None:
    only_uri = policy(
        {"type": "object", "properties": {"uri": {"type": "string"}}, "additionalProperties": False}
    )
    assert evaluate(only_uri, {"uri": "/Patient", "params": {}})
    assert not evaluate(only_uri, {"uri": "/Patient", "params": {"resource/type": "Patient"}})
