"""SMART system scopes: parsing, coverage and granting (pure functions, no server)."""

from __future__ import annotations

import pytest

from fhirbox.oauth.smart_scopes import (
    MAX_PARAMS,
    MAX_SCOPE_LENGTH,
    MAX_SCOPES,
    InvalidSmartScope,
    granted_scopes,
    parse_smart_scope,
    smart_scopes_of,
)


@pytest.mark.parametrize(
    ("scope", "type_", "letters"),
    [
        ("system/Patient.read", "Patient", "rs"),
        ("system/Patient.write", "Patient", "cud"),
        ("system/Patient.*", "Patient", "cruds"),
        ("system/*.read", "*", "rs"),
        ("system/Observation.rs", "Observation", "rs"),
        ("system/Observation.cruds", "Observation", "cruds"),
        ("system/*.c", "*", "c"),
        ("system/Patient.ud", "Patient", "ud"),
    ],
)
def test_v1_and_v2_scopes_parse_to_permission_letters(scope: str, type_: str, letters: str) -> None:
    parsed = parse_smart_scope(scope)
    assert parsed.resource_type == type_
    assert parsed.permissions == frozenset(letters)
    assert parsed.params == frozenset()


def test_v2_restrictions_are_parsed_and_decoded() -> None:
    parsed = parse_smart_scope("system/Observation.rs?category=laboratory&code.text=a%20b")
    assert parsed.params == {("category", "laboratory"), ("code.text", "a b")}


@pytest.mark.parametrize(
    "scope",
    [
        "system/Patient",  # no permissions
        "system/Patient.",  # empty permissions
        "system/Patient.sr",  # letters out of order
        "system/Patient.rr",  # repeated letter
        "system/Patient.x",
        "system/Patient.readwrite",
        "system/patient.read",  # not a type name
        "system/.read",
        "system/Pat-ient.rs",
        "system/Patient.read?category=x",  # restrictions are v2 only
        "system/Patient.rs?",  # ? without restrictions
        "system/Patient.rs?category",  # no value
        "system/Patient.rs?category=",  # empty value
        "system/Patient.rs?_id=1",  # _parameters are not field filters
        "system/Patient.rs?a..b=1",
        "system/Patient.rs?a$b=1",
        "system/Patient.rs?" + "&".join(f"f{i}=v" for i in range(MAX_PARAMS + 1)),
        "system/Patient.rs?a=" + "x" * MAX_SCOPE_LENGTH,
    ],
)
def test_malformed_system_scopes_are_refused_with_a_reason(scope: str) -> None:
    with pytest.raises(InvalidSmartScope):
        parse_smart_scope(scope)


@pytest.mark.parametrize(
    ("have", "want"),
    [
        ("system/*.read", "system/Patient.rs"),
        ("system/*.read", "system/Patient.r"),
        ("system/*.read", "system/Patient.read"),
        ("system/Patient.read", "system/Patient.s"),
        ("system/Patient.write", "system/Patient.cud"),
        ("system/Patient.write", "system/Patient.c"),
        ("system/*.*", "system/Observation.cruds"),
        ("system/Patient.cruds", "system/Patient.*"),
        ("system/Patient.rs", "system/Patient.read"),
        ("system/Observation.rs", "system/Observation.rs?category=lab"),
        ("system/Observation.rs?category=lab", "system/Observation.r?category=lab&status=final"),
        ("system/*.rs?category=lab", "system/Observation.s?category=lab"),
    ],
)
def test_a_scope_covers_narrower_ones(have: str, want: str) -> None:
    assert parse_smart_scope(have).covers(parse_smart_scope(want))


@pytest.mark.parametrize(
    ("have", "want"),
    [
        ("system/Patient.read", "system/*.read"),  # one type does not cover all
        ("system/Patient.read", "system/Observation.read"),
        ("system/*.read", "system/Patient.write"),
        ("system/*.read", "system/Patient.c"),
        ("system/Patient.write", "system/Patient.r"),
        ("system/Patient.write", "system/Patient.s"),
        ("system/Patient.rs", "system/Patient.*"),
        ("system/Observation.rs?category=lab", "system/Observation.rs"),  # restricted covers less
        ("system/Observation.rs?category=lab", "system/Observation.rs?category=vital"),
    ],
)
def test_a_scope_does_not_cover_wider_or_other_ones(have: str, want: str) -> None:
    assert not parse_smart_scope(have).covers(parse_smart_scope(want))


def test_granted_scopes_are_the_requested_ones_when_covered() -> None:
    allowed = ("system/*.read", "launch", "custom")
    assert granted_scopes(allowed, ["system/Patient.rs", "system/Observation.read", "custom"]) == [
        "system/Patient.rs",
        "system/Observation.read",
        "custom",
    ]


def test_granted_scopes_are_deduplicated() -> None:
    assert granted_scopes(("system/*.read",), ["system/Patient.rs", "system/Patient.rs"]) == [
        "system/Patient.rs"
    ]


def test_an_uncovered_scope_is_named() -> None:
    with pytest.raises(LookupError) as missing:
        granted_scopes(("system/*.read", "custom"), ["system/Patient.rs", "system/Patient.c", "other"])
    assert missing.value.args[0] == "system/Patient.c other"


def test_plain_scopes_keep_their_meaning_and_are_never_covered_by_wildcards() -> None:
    with pytest.raises(LookupError):
        granted_scopes(("system/*.*",), ["patient/*.read"])


def test_a_malformed_requested_system_scope_is_invalid() -> None:
    with pytest.raises(InvalidSmartScope):
        granted_scopes(("system/*.*",), ["system/Patient.wr"])


def test_requests_are_bounded_in_number() -> None:
    many = [f"s{i}" for i in range(MAX_SCOPES + 1)]
    with pytest.raises(InvalidSmartScope):
        granted_scopes(tuple(many), many)


def test_a_stored_malformed_system_scope_grants_nothing() -> None:
    assert smart_scopes_of(("system/Patient.xx", "system/Patient.r", "other")) == (
        parse_smart_scope("system/Patient.r"),
    )
