"""User-written regular expressions run in linear time (RE2), and RE2-unsupported ones are refused at write.

Catastrophic-backtracking patterns are sent to a real server process with a 100,000-character input: on
a backtracking engine that request would not answer within the client's 10 s timeout.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from fhirbox.policy.compile import compile_policy
from fhirbox.policy.rule import PolicyError
from tests.policy.conftest import evaluate
from tests.support import ROOT, ServerProcess, basic

LONG = 100_000
READER = basic("reader", "reader-secret")
LINK = [{"resourceType": "Client", "id": "reader"}]
PATHOLOGICAL = ["#(a+)+b", "#(a|aa)+b", "#(a*)*b", "#(.*a){20}b"]


@pytest.mark.parametrize("pattern", PATHOLOGICAL)
def test_pathological_matcho_pattern_answers_on_a_long_input(server: ServerProcess, pattern: str) -> None:
    policy = {"engine": "matcho", "matcho": {"body": {"note": pattern}}, "link": LINK}
    with server.client(auth=ROOT) as admin, server.client() as reader:  # timeout=10 s per request
        assert admin.put(
            "/Client/reader", json={"secret": "reader-secret", "grant_types": ["basic"]}
        ).is_success
        assert admin.put("/AccessPolicy/long-input", json=policy).status_code == 201
        refused = reader.post(
            "/Patient", json={"resourceType": "Patient", "note": "a" * LONG + "c"}, headers=READER
        )
        assert refused.status_code == 403
        allowed = reader.post(
            "/Patient", json={"resourceType": "Patient", "note": "a" * LONG + "b"}, headers=READER
        )
        assert allowed.status_code == 201


UNSUPPORTED = ["(a)\\1", "(?=a)a", "(?<!b)a", "\\bword\\b", "(?>a+)"]


@pytest.mark.parametrize("regex", UNSUPPORTED)
async def test_matcho_pattern_re2_cannot_run_is_422_naming_it(root: httpx.AsyncClient, regex: str) -> None:
    policy = {"engine": "matcho", "matcho": {"params": {"q": f"#{regex}"}}}
    response = await root.put("/AccessPolicy/bad", json=policy)
    assert response.status_code == 422, response.text
    diagnostics = response.json()["issue"][0]["diagnostics"]
    assert "matcho.params.q: invalid regular expression" in diagnostics and repr(regex) in diagnostics
    assert (await root.get("/AccessPolicy/bad")).status_code == 404


async def test_json_schema_pattern_with_a_backreference_is_422_naming_it(root: httpx.AsyncClient) -> None:
    policy = {"engine": "json-schema", "schema": {"properties": {"uri": {"pattern": "^(a)\\1$"}}}}
    response = await root.put("/AccessPolicy/bad", json=policy)
    assert response.status_code == 422, response.text
    assert "^(a)\\\\1$" in response.json()["issue"][0]["diagnostics"]


def matches(pattern: str, value: Any) -> bool:
    return evaluate({"engine": "matcho", "matcho": {"uri": pattern}}, {"uri": value})


UNCHANGED = [
    # whole-string match, as with Python's re.fullmatch
    ("#/Patient/[a-z0-9-]+", "/Patient/pt-1", True),
    ("#Patient/.*", "/Patient/pt-1", False),
    ("#a|ab", "ab", True),
    ("#a\\Z", "a", True),
    ("#a$", "a\n", False),
    ("#.+", "a\nb", False),
    ("#(?s).+", "a\nb", True),
    # characters, not bytes
    ("#é.", "éa", True),
    ("#.{2}", "日本", True),
    ("#.", "😀", True),
    ("#\\u00e9", "é", True),
    ("#[à-ÿ]+", "éü", True),
    ("#(?i)straße", "STRAßE", True),
    # Python's Unicode classes, not RE2's ASCII ones
    ("#\\w+", "héllo_wörld", True),
    ("#\\w+", "日本語", True),
    ("#[\\w-]+", "ça-va", True),
    ("#\\W", "é", False),
    ("#\\d+", "٣٤", True),
    ("#\\D", "٣", False),
    ("#\\s", "\u00a0", True),
    ("#\\S+", "x\u2003", False),
    # Python's {,n}
    ("#a{,2}", "aa", True),
    ("#a{,2}", "aaa", False),
    # literal brackets and escapes stay literal
    ("#[]a]+", "]a", True),
    ("#\\\\w", "\\w", True),
    ("#\\[\\w\\]", "[é]", True),
]


@pytest.mark.parametrize(
    ("pattern", "value", "expected"), UNCHANGED, ids=[f"{p} {v!r}" for p, v, _ in UNCHANGED]
)
def test_regex_meaning_is_unchanged(pattern: str, value: str, expected: bool) -> None:
    assert matches(pattern, value) is expected


def test_invalid_regex_still_names_the_problem() -> None:
    with pytest.raises(PolicyError, match=r"matcho.uri: invalid regular expression '\[unclosed': "):
        compile_policy({"engine": "matcho", "matcho": {"uri": "#[unclosed"}})
