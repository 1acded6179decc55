"""The matcho engine: each construct of Aidbox's Matcho DSL, once matching and once not."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbox.policy.compile import compile_policy
from fhirbox.policy.request_object import StaticRequest
from fhirbox.policy.rule import PolicyError
from tests.policy.conftest import evaluate

REQUEST: dict[str, Any] = {
    "request-method": "get",
    "uri": "/Patient/pt-1",
    "params": {"resource/type": "Patient", "resource/id": "pt-1", "practitioner": "pr-1"},
    "client": {"id": "reader", "details": {"practitioner": "pr-1", "active": True, "level": 1}},
    "scope": ["system/Patient.read", "system/Observation.read"],
    "headers": {"accept": "application/json", "x-blank": "   ", "x-empty": ""},
    "body": {
        "resourceType": "Patient",
        "generalPractitioner": [{"reference": "Practitioner/pr-1"}],
        "identifier": [{"system": "snomed"}, {"system": "loinc", "value": "1"}],
        "tags": ["a", "b", "c"],
    },
}


def matches(pattern: dict[str, Any]) -> bool:
    return evaluate({"engine": "matcho", "matcho": pattern}, REQUEST)


CASES = [
    # scalars and objects
    ("string equal", {"request-method": "get"}, True),
    ("string differs", {"request-method": "post"}, False),
    ("object is a subset", {"params": {"resource/type": "Patient"}}, True),
    ("nested object subset", {"client": {"details": {"practitioner": "pr-1"}}}, True),
    ("object key missing", {"params": {"_id": "pt-1"}}, False),
    ("object against a string", {"uri": {"a": "b"}}, False),
    ("boolean equal", {"client": {"details": {"active": True}}}, True),
    ("boolean is not one", {"client": {"details": {"level": True}}}, False),
    ("number equal", {"client": {"details": {"level": 1}}}, True),
    ("number differs", {"client": {"details": {"level": 2}}}, False),
    ("null matches a missing key", {"jwt": None}, True),
    ("null against a value", {"uri": None}, False),
    # arrays
    ("array prefix in order", {"scope": ["system/Patient.read"]}, True),
    ("whole array", {"scope": ["system/Patient.read", "system/Observation.read"]}, True),
    ("array out of order", {"scope": ["system/Observation.read", "system/Patient.read"]}, False),
    ("array longer than value", {"body": {"tags": ["a", "b", "c", "d"]}}, False),
    # regular expressions
    ("regex matches whole string", {"uri": "#/Patient/[a-z0-9-]+"}, True),
    ("regex is anchored", {"uri": "#Patient/.*"}, False),
    ("regex on a non-string", {"client": {"details": {"level": "#1"}}}, False),
    # special values
    ("present? on a value", {"client": {"id": "present?"}}, True),
    ("present? on a missing key", {"jwt": "present?"}, False),
    ("nil? on a missing key", {"session": "nil?"}, True),
    ("nil? on a value", {"uri": "nil?"}, False),
    ("not-blank? on text", {"headers": {"accept": "not-blank?"}}, True),
    ("not-blank? on spaces", {"headers": {"x-blank": "not-blank?"}}, False),
    ("not-blank? on empty", {"headers": {"x-empty": "not-blank?"}}, False),
    ("not-blank? on a missing key", {"headers": {"x-none": "not-blank?"}}, False),
    # paths into the request
    ("path equals", {"params": {"practitioner": ".client.details.practitioner"}}, True),
    ("path differs", {"params": {"resource/id": ".client.details.practitioner"}}, False),
    ("path to a missing value never matches", {"params": {"other": ".client.nothing"}}, False),
    # operators
    ("$enum member", {"request-method": {"$enum": ["get", "post"]}}, True),
    ("$enum non-member", {"request-method": {"$enum": ["put", "delete"]}}, False),
    ("$enum numbers", {"client": {"details": {"level": {"$enum": [1, 2]}}}}, True),
    ("$enum never takes true for 1", {"client": {"details": {"level": {"$enum": [True]}}}}, False),
    (
        "$one-of some option",
        {"params": {"$one-of": [{"name": "present?"}, {"resource/id": "pt-1"}]}},
        True,
    ),
    ("$one-of no option", {"params": {"$one-of": [{"name": "present?"}, {"_id": "present?"}]}}, False),
    ("$contains an element", {"body": {"identifier": {"$contains": {"system": "loinc"}}}}, True),
    ("$contains none", {"body": {"identifier": {"$contains": {"system": "icd-10"}}}}, False),
    ("$contains on a non-array", {"uri": {"$contains": "Patient"}}, False),
    ("$every element", {"body": {"identifier": {"$every": {"system": "present?"}}}}, True),
    ("$every fails on one", {"body": {"identifier": {"$every": {"value": "present?"}}}}, False),
    ("$not of a mismatch", {"request-method": {"$not": "delete"}}, True),
    ("$not of a match", {"params": {"$not": {"resource/type": "Patient"}}}, False),
    ("$present-all in any order", {"body": {"tags": {"$present-all": ["c", "a"]}}}, True),
    ("$present-all missing one", {"body": {"tags": {"$present-all": ["a", "z"]}}}, False),
    ("$length equal", {"scope": {"$length": 2}}, True),
    ("$length differs", {"scope": {"$length": 3}}, False),
    ("$length with $present-all", {"body": {"tags": {"$length": 3, "$present-all": ["b"]}}}, True),
    (
        "$reference parsed",
        {"body": {"generalPractitioner": [{"$reference": {"resourceType": "Practitioner", "id": "pr-1"}}]}},
        True,
    ),
    (
        "$reference other id",
        {"body": {"generalPractitioner": [{"$reference": {"id": "pr-2"}}]}},
        False,
    ),
]


@pytest.mark.parametrize(("pattern", "expected"), [(p, e) for _, p, e in CASES], ids=[c[0] for c in CASES])
def test_matcho_construct(pattern: dict[str, Any], expected: bool) -> None:
    assert matches(pattern) is expected


def test_every_top_level_key_must_match() -> None:
    assert matches({"request-method": "get", "params": {"resource/type": "Patient"}})
    assert not matches({"request-method": "get", "params": {"resource/type": "Observation"}})


def test_explain_names_the_first_failing_path() -> None:
    policy = compile_policy(
        {"engine": "matcho", "matcho": {"request-method": "get", "params": {"resource/type": "Encounter"}}}
    )
    explained = policy.rule.explain(StaticRequest(REQUEST))
    assert explained == {"engine": "matcho", "result": False, "failed-at": "params.resource/type"}


MALFORMED = [
    ("invalid regex", {"uri": "#[unclosed"}, "matcho.uri: invalid regular expression"),
    ("unknown operator", {"uri": {"$regex": "x"}}, "unknown matcho operator '$regex'"),
    ("$one-of with other keys", {"params": {"a": 1, "$one-of": [{"b": 1}]}}, "$one-of cannot be combined"),
    ("$enum not an array", {"uri": {"$enum": "get"}}, "matcho.uri.$enum: must be a non-empty array"),
    ("$enum of objects", {"uri": {"$enum": [{"a": 1}]}}, "matcho.uri.$enum: may hold only"),
    ("$length negative", {"scope": {"$length": -1}}, "matcho.scope.$length: must be a non-negative"),
    ("empty path", {"uri": ".client..id"}, "invalid request path"),
    ("regex deep inside", {"a": [{"b": {"$not": "#("}}]}, "matcho.a[0].b.$not: invalid regular expression"),
]


@pytest.mark.parametrize(
    ("pattern", "message"), [(p, m) for _, p, m in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_malformed_pattern_is_rejected_naming_the_problem(pattern: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy({"engine": "matcho", "matcho": pattern})
    assert message in str(caught.value)


def test_matcho_needs_an_object_pattern() -> None:
    with pytest.raises(PolicyError, match="matcho: must be an object"):
        compile_policy({"engine": "matcho", "matcho": "get"})
