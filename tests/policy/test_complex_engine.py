"""The complex engine: and/or over nested rules, in order, with short-circuit."""

from __future__ import annotations

from typing import Any

import pytest

from fhirbox.policy.compile import compile_policy
from fhirbox.policy.request_object import StaticRequest
from fhirbox.policy.rule import PolicyError
from tests.policy.conftest import evaluate

GET = {"engine": "matcho", "matcho": {"request-method": "get"}}
PATIENT = {"engine": "matcho", "matcho": {"params": {"resource/type": "Patient"}}}
ORGANIZATION = {
    "engine": "json-schema",
    "schema": {"properties": {"params": {"properties": {"resource/type": {"const": "Organization"}}}}},
}
READ_PATIENT = {"request-method": "get", "params": {"resource/type": "Patient"}}


def test_and_passes_when_every_rule_passes() -> None:
    assert evaluate({"engine": "complex", "and": [GET, PATIENT]}, READ_PATIENT)


def test_and_fails_when_one_rule_fails() -> None:
    assert not evaluate(
        {"engine": "complex", "and": [GET, PATIENT]}, {**READ_PATIENT, "request-method": "put"}
    )


def test_or_passes_when_one_rule_passes() -> None:
    assert evaluate({"engine": "complex", "or": [ORGANIZATION, PATIENT]}, READ_PATIENT)


def test_or_fails_when_no_rule_passes() -> None:
    assert not evaluate(
        {"engine": "complex", "or": [ORGANIZATION, PATIENT]}, {"params": {"resource/type": "X"}}
    )


def test_nested_complex_rules() -> None:
    nested = {"engine": "complex", "and": [GET, {"engine": "complex", "or": [ORGANIZATION, PATIENT]}]}
    assert evaluate(nested, READ_PATIENT)
    assert not evaluate(nested, {**READ_PATIENT, "params": {"resource/type": "Observation"}})


def test_evaluation_stops_at_the_deciding_rule() -> None:
    policy = compile_policy({"engine": "complex", "or": [PATIENT, {"engine": "allow"}, ORGANIZATION]})
    explained = policy.rule.explain(StaticRequest({"params": {"resource/type": "X"}}))
    assert explained["result"] is True
    assert explained["decided-by"] == "or[1]"
    assert [rule["engine"] for rule in explained["or"]] == ["matcho", "allow"]


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ({"engine": "complex", "and": [GET], "or": [GET]}, "never both on one level"),
        ({"engine": "complex"}, "complex rules need 'and' or 'or'"),
        ({"engine": "complex", "and": []}, "and: must be a non-empty array"),
        ({"engine": "complex", "or": [{"matcho": {}}]}, "or[0].engine: required"),
        ({"engine": "complex", "or": [GET, {"engine": "sql"}]}, "or[1].engine: unknown engine 'sql'"),
        (
            {"engine": "complex", "and": [{"engine": "complex", "and": [GET], "or": [GET]}]},
            "and[0]: complex rules take 'and' or 'or', never both",
        ),
    ],
    ids=["both", "neither", "empty", "rule without engine", "unknown nested engine", "both nested"],
)
def test_malformed_complex_policy_is_rejected(policy: dict[str, Any], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        compile_policy(policy)
    assert message in str(caught.value)
