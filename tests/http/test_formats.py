"""Request and response formats: JSON and YAML bodies, negotiation, and the safety bounds on bodies."""

from __future__ import annotations

import socket
from collections.abc import Callable

import httpx
import pytest
import yaml

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
