"""Request and response formats: JSON and YAML bodies, negotiation, and the safety bounds on bodies."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import httpx
import orjson
import pytest
import yaml

import fhirbox.http.formats
from tests.support import ROOT_ID, ROOT_SECRET, ServerProcess, basic

SEED_CLIENT = b"""secret: verysecret
grant_types:
  - client_credentials
"""


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/fhir+json", "application/json; charset=utf-8"]
)
async def test_json_bodies_are_accepted(root: httpx.AsyncClient, content_type: str) -> None:
    response = await root.put(
        "/Patient/j", content=b'{"active": true}', headers={"Content-Type": content_type}
    )
    assert response.status_code == 201
    assert response.json()["active"] is True


@pytest.mark.parametrize("content_type", ["text/yaml", "application/yaml", "application/x-yaml"])
async def test_yaml_bodies_are_accepted(root: httpx.AsyncClient, content_type: str) -> None:
    body = b"name:\n  - family: Doe\nactive: true\n"
    response = await root.put("/Patient/y", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 201
    assert response.json()["name"] == [{"family": "Doe"}]


async def test_the_seed_guides_yaml_request_works_as_written(root: httpx.AsyncClient) -> None:
    response = await root.put(
        "/Client/api-client",
        content=SEED_CLIENT,
        headers={"Accept": "text/yaml", "Content-Type": "text/yaml"},
    )
    assert response.status_code == 201
    assert response.headers["content-type"].startswith("text/yaml")
    client = yaml.safe_load(response.text)
    assert client["resourceType"] == "Client"
    assert client["id"] == "api-client"
    assert client["grant_types"] == ["client_credentials"]
    assert "secret" not in client


async def test_yaml_response_by_accept_header(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/a", json={"active": True})
    for accept in ("text/yaml", "application/yaml", "application/x-yaml", "text/html, text/yaml;q=0.9"):
        response = await root.get("/Patient/a", headers={"Accept": accept})
        assert response.headers["content-type"].startswith("text/yaml"), accept
        assert yaml.safe_load(response.text)["active"] is True


async def test_format_parameter_wins_over_accept(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/a", json={"active": True})
    as_yaml = await root.get("/Patient/a", params={"_format": "yaml"})
    assert as_yaml.headers["content-type"].startswith("text/yaml")
    assert yaml.safe_load(as_yaml.text)["id"] == "a"
    as_json = await root.get("/Patient/a", params={"_format": "json"}, headers={"Accept": "text/yaml"})
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["id"] == "a"


async def test_search_bundles_render_in_yaml(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/a", json={})
    response = await root.get("/Patient", params={"_format": "yaml"})
    assert yaml.safe_load(response.text)["type"] == "searchset"


async def test_json_is_the_default_response(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/a", json={})
    assert response.headers["content-type"] == "application/json"


async def test_yaml_timestamps_stay_strings(root: httpx.AsyncClient) -> None:
    body = b"birthDate: 2001-02-03\nseen: 2024-01-31T12:00:00Z\n"
    response = await root.put("/Patient/t", content=body, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 201
    assert response.json()["birthDate"] == "2001-02-03"
    assert response.json()["seen"] == "2024-01-31T12:00:00Z"


@pytest.mark.parametrize(
    "body",
    [
        b"!!python/object/apply:os.system ['echo hacked']\n",
        b"a: !!python/object:collections.OrderedDict {}\n",
        b"a: !!python/name:os.system\n",
        b"a: !custom 1\n",
        b"a: !!binary aGVsbG8=\n",
    ],
)
async def test_yaml_tags_are_rejected(root: httpx.AsyncClient, body: bytes) -> None:
    response = await root.put("/Patient/t", content=body, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"


async def test_yaml_alias_bomb_is_rejected(root: httpx.AsyncClient) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for level in range(1, 9):
        previous = chr(ord("a") + level - 1)
        name = chr(ord("a") + level)
        refs = ",".join(f"*{previous}" for _ in range(10))
        lines.append(f"{name}: &{name} [{refs}]")
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) < 2000
    response = await root.put("/Patient/bomb", content=body, headers={"Content-Type": "text/yaml"})
    assert response.status_code in (400, 413)
    assert response.json()["resourceType"] == "OperationOutcome"
    assert (await root.get("/Patient/bomb")).status_code == 404


async def _stored(root: httpx.AsyncClient, resource_id: str, body: bytes, content_type: str) -> bytes:
    """What the server stored for ``body``, as canonical JSON (sorted keys, no id or meta), so that
    1000 and 1000.0, 0 and -0.0 stay different."""
    response = await root.put(f"/Patient/{resource_id}", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 201, response.text
    stored = orjson.loads((await root.get(f"/Patient/{resource_id}")).content)
    for server_field in ("id", "meta"):
        stored.pop(server_field, None)
    return orjson.dumps(stored, option=orjson.OPT_SORT_KEYS)


# JSON is YAML 1.2: the same bytes must mean the same thing under either Content-Type.
JSON_AS_YAML = b"""{"resourceType": "Patient", "exp": 1e3, "EXP": 1E-3, "zero": -0, "negzero": -0.0,
 "i63": 9223372036854775807, "i63plus": 9223372036854775808, "u64": 18446744073709551615,
 "u64plus": 18446744073709551616, "i64minus": -9223372036854775809,
 "huge": 123456789012345678901234567890, "none": null, "yes": true, "no": false, "tenth": 0.1,
 "words": ["NO", "on", "12:30", "0777", "2024-01-01"]}"""

# YAML spellings and the JSON that means the same (YAML 1.2 core schema).
YAML_SPELLINGS = b"""resourceType: Patient
answer: NO
on: on
yes: yes
Off: Off
time: 12:30
sexagesimal: 1:20:30
octal: 0777
octal12: 0o17
hex: 0x1F
date: 2024-01-01
stamp: 2024-01-31T12:00:00Z
exp: 1e3
half: .5
whole: 1.
plus: +12
zero: -0
underscored: 1_000
binary: 0b101
none: null
tilde: ~
empty:
t: true
f: False
T: TRUE
mixed: tRUE
near: 9223372036854775807
big: 18446744073709551616
"""
YAML_SPELLINGS_AS_JSON = b"""{"resourceType": "Patient", "answer": "NO", "on": "on", "yes": "yes",
 "Off": "Off", "time": "12:30", "sexagesimal": "1:20:30", "octal": 777, "octal12": 15, "hex": 31,
 "date": "2024-01-01", "stamp": "2024-01-31T12:00:00Z", "exp": 1e3, "half": 0.5, "whole": 1.0,
 "plus": 12, "zero": -0, "underscored": "1_000", "binary": "0b101", "none": null, "tilde": null,
 "empty": null, "t": true, "f": false, "T": true, "mixed": "tRUE", "near": 9223372036854775807,
 "big": 18446744073709551616}"""


@pytest.mark.parametrize(
    ("yaml_body", "json_body"), [(JSON_AS_YAML, JSON_AS_YAML), (YAML_SPELLINGS, YAML_SPELLINGS_AS_JSON)]
)
async def test_yaml_and_json_bodies_store_the_same(
    root: httpx.AsyncClient, yaml_body: bytes, json_body: bytes
) -> None:
    from_json = await _stored(root, "from-json", json_body, "application/json")
    from_yaml = await _stored(root, "from-yaml", yaml_body, "text/yaml")
    assert orjson.loads(from_yaml) == orjson.loads(from_json)
    assert from_yaml == from_json


# Each YAML number and the JSON spelling of the same number.
REFUSED_NUMBERS = [
    (b"1e400", b"1e400"),
    (b"-1.5e999", b"-1.5e999"),
    (b"0x" + b"F" * 300, b"1" + b"0" * 400),
    (b".inf", b"1e400"),
    (b"-.Inf", b"-1e400"),
    (b".nan", b"1e400"),
]


async def test_numbers_a_json_body_refuses_are_refused_in_yaml(root: httpx.AsyncClient) -> None:
    for yaml_value, json_value in REFUSED_NUMBERS:
        as_json = await root.put(
            "/Patient/n",
            content=b'{"value": ' + json_value + b"}",
            headers={"Content-Type": "application/json"},
        )
        as_yaml = await root.put(
            "/Patient/n", content=b"value: " + yaml_value, headers={"Content-Type": "text/yaml"}
        )
        assert as_json.status_code == as_yaml.status_code == 400, (yaml_value, as_yaml.text)
        assert as_json.json()["id"] == as_yaml.json()["id"] == "invalid"
        assert (await root.get("/Patient/n")).status_code == 404


def _aliases_of_a_long_string(uses: int) -> bytes:
    return b'text: &t "' + b"x" * 1000 + b'"\nmany: [' + b", ".join([b"*t"] * uses) + b"]\n"


async def test_yaml_alias_expansion_is_bounded_by_the_body_limit(root: httpx.AsyncClient) -> None:
    """FHIRBOX_MAX_BODY_BYTES (1 MiB by default) bounds what the aliases expand to, not only the body."""
    within = _aliases_of_a_long_string(900)
    response = await root.put("/Patient/within", content=within, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 201
    assert response.json()["many"] == ["x" * 1000] * 900
    beyond = _aliases_of_a_long_string(1100)
    assert len(beyond) < 10_000
    response = await root.put("/Patient/beyond", content=beyond, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 413, response.status_code
    assert response.json()["resourceType"] == "OperationOutcome"
    assert response.json()["id"] == "too-costly"
    assert (await root.get("/Patient/beyond")).status_code == 404


@contextmanager
def _lines_run_in(filename: str, cap: int) -> Iterator[list[int]]:
    """Counts the lines of Python run in ``filename`` (a measure of work, not of time); counting and
    tracing stop past ``cap``."""
    count = [0]

    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "line":
            count[0] += 1
        if count[0] <= cap:
            return local
        frame.f_trace = None
        sys.settrace(None)
        return None

    def calls(frame: FrameType, event: str, arg: Any) -> Any:
        return local if frame.f_code.co_filename == filename else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        yield count
    finally:
        sys.settrace(previous)


async def test_a_billion_laughs_is_refused_before_it_is_expanded(root: httpx.AsyncClient) -> None:
    """Ten levels of ten aliases would expand to 10**10 strings. The decoder must refuse it after a
    pass over its few nodes: far fewer lines run than one per expanded node would take."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, 10):
        previous, name = chr(ord("a") + level - 1), chr(ord("a") + level)
        lines.append(f"{name}: &{name} [" + ",".join([f"*{previous}"] * 10) + "]")
    body = ("\n".join(lines) + "\n").encode()
    assert len(body) < 600
    cap = 20_000
    with _lines_run_in(fhirbox.http.formats.__file__, cap) as decoder_lines:
        response = await root.put("/Patient/lol", content=body, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    assert decoder_lines[0] <= cap
    assert (await root.get("/Patient/lol")).status_code == 404


TRICKY_STRINGS = [
    "NO", "on", "yes", "Off", "12:30", "0777", "0o17", "0x1F", "1e3", "1E+3", "-2e-5", "-0", "+1", ".5",
    "1.", "2024-01-01", "~", "null", "Null", "", "true", "False", ".inf", "-.Inf", ".NaN", "1_000",
]  # fmt: skip


async def test_yaml_responses_quote_strings_a_yaml_reader_would_take_for_other_values(
    root: httpx.AsyncClient,
) -> None:
    document = {"words": TRICKY_STRINGS, "keys": {word: word for word in TRICKY_STRINGS}}
    await root.put("/Patient/words", json=document)
    text = (await root.get("/Patient/words", headers={"Accept": "text/yaml"})).text
    for word in TRICKY_STRINGS:
        assert f"- '{word}'\n" in text or f'- "{word}"\n' in text, (word, text)
    assert yaml.safe_load(text)["words"] == TRICKY_STRINGS  # a YAML 1.1 reader
    response = await root.put("/Patient/again", content=text.encode(), headers={"Content-Type": "text/yaml"})
    assert response.status_code == 201, response.text  # the server reads YAML 1.2
    assert response.json()["words"] == TRICKY_STRINGS
    assert response.json()["keys"] == {word: word for word in TRICKY_STRINGS}


async def test_recursive_yaml_alias_is_rejected(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/r", content=b"a: &x [*x]\n", headers={"Content-Type": "text/yaml"})
    assert response.status_code == 400


@pytest.mark.parametrize("content_type", ["application/json", "text/yaml"])
async def test_nesting_deeper_than_the_limit_is_400(root: httpx.AsyncClient, content_type: str) -> None:
    deep = b'{"a":' * 150 + b"1" + b"}" * 150
    response = await root.put("/Patient/deep", content=deep, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert "nested deeper" in response.json()["issue"][0]["diagnostics"]


async def test_nesting_within_the_limit_is_accepted(root: httpx.AsyncClient) -> None:
    ok = b'{"a":' * 90 + b"1" + b"}" * 90
    response = await root.put("/Patient/ok", content=ok, headers={"Content-Type": "application/json"})
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"a": ', "application/json"),
        (b"{'a': 1}", "application/json"),
        (b"\xff\xfe", "application/json"),
        (b'{"a": NaN}', "application/json"),
        (b"a: [1, 2\n", "text/yaml"),
        (b"a: 1\n---\nb: 2\n", "text/yaml"),
        (b"\t- a: :\n", "text/yaml"),
        (b"   ", "application/json"),
    ],
)
async def test_malformed_bodies_are_400(root: httpx.AsyncClient, body: bytes, content_type: str) -> None:
    response = await root.put("/Patient/m", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400
    assert response.json()["id"] == "invalid"


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", "multipart/form-data", None])
async def test_unsupported_or_missing_content_type_is_415(
    root: httpx.AsyncClient, content_type: str | None
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await root.put("/Patient/c", content=b'{"a": 1}', headers=headers)
    assert response.status_code == 415
    assert response.json()["id"] == "not-supported"


async def test_body_over_the_limit_is_413_by_content_length(root: httpx.AsyncClient) -> None:
    big = b'{"a": "' + b"x" * (1024 * 1024) + b'"}'
    response = await root.put("/Patient/big", content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413
    assert response.json()["id"] == "too-costly"


async def test_invalid_content_length_is_400(root: httpx.AsyncClient) -> None:
    request = root.build_request(
        "PUT", "/Patient/x", content=b"{}", headers={"Content-Type": "application/json"}
    )
    request.headers["Content-Length"] = "abc"
    assert (await root.send(request)).status_code == 400


async def test_errors_are_rendered_in_the_negotiated_format(root: httpx.AsyncClient) -> None:
    response = await root.get("/Patient/nobody", headers={"Accept": "text/yaml"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/yaml")
    assert yaml.safe_load(response.text)["id"] == "not-found"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"name": "a\\u0000b"}', "application/json"),
        (b'{"a\\u0000b": 1}', "application/json"),
        (b'name: "a\\0b"\n', "text/yaml"),
    ],
)
async def test_the_nul_character_is_refused_on_every_backend(
    root: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    response = await root.put("/Patient/nul", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 400, response.text
    assert "U+0000" in response.json()["issue"][0]["diagnostics"]
    assert (await root.get("/Patient/nul")).status_code == 404


async def test_a_query_that_is_not_utf8_is_400(root: httpx.AsyncClient) -> None:
    response = await root.get("/Patient?_format=%ff")
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
    response = await root.get("/Patient?name=%ff")
    assert response.status_code == 400
    # Even where the handler would not read it, an unreadable query is refused (policies may read it).
    unread = await root.get("/Patient/x?_format=%ff")
    assert unread.status_code == 400
    assert unread.json()["id"] == "invalid"


def _raw_request(server: ServerProcess, head: bytes, chunks: list[bytes]) -> bytes:
    """Send a raw HTTP/1.1 request (the body as given, e.g. chunked) and return the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for chunk in chunks:
                sock.sendall(chunk)
        except OSError:
            pass  # the server may answer 413 and close before the client has sent everything
        answer = b""
        while True:
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
            if b"\r\n\r\n" in answer and b'"resourceType"' in answer and answer.rstrip().endswith(b"}"):
                break
    return answer


def _chunked(payload: bytes, size: int) -> list[bytes]:
    pieces = [payload[i : i + size] for i in range(0, len(payload), size)]
    return [b"%x\r\n%s\r\n" % (len(p), p) for p in pieces] + [b"0\r\n\r\n"]


def _head(path: str, extra: str) -> bytes:
    auth = basic(ROOT_ID, ROOT_SECRET)["Authorization"]
    return (
        f"PUT {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nConnection: close\r\n{extra}\r\n"
    ).encode()


def test_chunked_body_over_the_limit_is_413(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(env={"FHIRBOX_MAX_BODY_BYTES": "2000"})
    payload = b'{"a": "' + b"x" * 10_000 + b'"}'
    answer = _raw_request(
        server, _head("/Patient/chunky", "Transfer-Encoding: chunked\r\n"), _chunked(payload, 500)
    )
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b'"too-costly"' in answer
    with server.client(auth=(ROOT_ID, ROOT_SECRET)) as http:
        assert http.get("/Patient/chunky").status_code == 404


def test_chunked_body_within_the_limit_is_accepted(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(env={"FHIRBOX_MAX_BODY_BYTES": "2000"})
    payload = b'{"a": "' + b"x" * 1000 + b'"}'
    answer = _raw_request(
        server, _head("/Patient/small", "Transfer-Encoding: chunked\r\n"), _chunked(payload, 100)
    )
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]


async def test_yaml_aliases_cannot_store_more_than_the_same_json_could(root: httpx.AsyncClient) -> None:
    """Control characters count once in the YAML but six times as stored JSON (``\\u0001``)."""
    body = 'a: &a "' + "\\x01" * 1000 + '"\nb: [' + ", ".join(["*a"] * 1040) + "]\n"
    assert len(body) < 10_000
    response = await root.post("/Patient", content=body, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 413, response.status_code
    assert (await root.get("/Patient")).json()["total"] == 0
