"""A real server's whole output is log lines of one format, with one access line per request."""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from typing import Any

import pytest

from tests.oauth.support import SECRET, client_body
from tests.support import ROOT, ServerProcess
from tests.test_logs import TEXT_LINE

ACCESS_FIELDS = ("remote_addr", "method", "path", "status", "bytes", "duration_ms", "client_id")
TEXT_FIELD = re.compile(r'([a-z_]+)=("(?:[^"\\]|\\.)*"|[^\s"=\\]+)')


def parse_text(line: str) -> dict[str, Any]:
    assert TEXT_LINE.fullmatch(line), line
    return {
        key: json.loads(value) if value.startswith('"') else value for key, value in TEXT_FIELD.findall(line)
    }


def parse_lines(output: str, log_format: str) -> list[dict[str, Any]]:
    """Every line of the output, parsed; fails on any line that is not a log line of the format."""
    assert output.endswith("\n")
    lines = output.splitlines()
    assert lines
    if log_format == "json":
        parsed = [json.loads(line) for line in lines]
    else:
        parsed = [parse_text(line) for line in lines]
    for line in parsed:
        assert {"time", "level", "logger", "message"} <= set(line), line
    return parsed


def exercise(server: ServerProcess) -> None:
    """Requests of every kind: success, errors, tokens, credentials in query strings."""
    with server.client(auth=ROOT) as admin, server.client() as anyone:
        assert admin.put("/Client/api-client", json=client_body()).status_code == 201
        token = anyone.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("api-client", SECRET)
        ).json()["access_token"]
        assert (
            anyone.post(
                "/auth/token", data={"grant_type": "client_credentials"}, auth=("api-client", "wrong")
            ).status_code
            == 401
        )
        assert admin.get("/Patient/nope", headers={"X-Request-Id": "trace-me-1"}).status_code == 404
        assert anyone.get("/no/such/path").status_code == 404
        assert anyone.get(f"/Patient?access_token={token}&_count=1").status_code == 401


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_every_line_of_a_servers_output_has_the_chosen_format(
    server_factory: Callable[..., ServerProcess], log_format: str
) -> None:
    server = server_factory(env={"FHIRBOX_LOG_FORMAT": log_format, "FHIRBOX_LOG_LEVEL": "debug"})
    exercise(server)
    server.stop()
    lines = parse_lines(server.log_path.read_text(), log_format)
    loggers = {line["logger"] for line in lines}
    assert {"fhirbox.server", "uvicorn.error", "fhirbox.access"} <= loggers

    access = [line for line in lines if line["logger"] == "fhirbox.access"]
    for line in access:
        assert set(ACCESS_FIELDS) <= set(line), line
        assert line["request_id"]
    assert len(access) == 7
    traced = [line for line in access if line["request_id"] == "trace-me-1"]
    assert len(traced) == 1
    assert traced[0]["method"] == "GET" and traced[0]["path"] == "/Patient/nope"
    assert str(traced[0]["status"]) == "404" and traced[0]["client_id"] == "root"
    token_lines = [line for line in access if line["path"] == "/auth/token"]
    assert [str(line["status"]) for line in token_lines] == ["200", "401"]
    assert token_lines[0]["client_id"] == "api-client" and token_lines[1]["client_id"] == "-"
    assert [line["path"] for line in access if line["path"].startswith("/Patient?")] == [
        "/Patient?access_token=***&_count=1"
    ]
    assert float(access[0]["duration_ms"]) >= 0 and int(access[0]["bytes"]) > 0


def test_the_access_log_is_written_at_the_warning_level_and_turned_off_by_its_setting(
    server_factory: Callable[..., ServerProcess],
) -> None:
    on = server_factory(env={"FHIRBOX_LOG_LEVEL": "warning"})
    off = server_factory(env={"FHIRBOX_LOG_LEVEL": "warning", "FHIRBOX_ACCESS_LOG": "false"})
    for server in (on, off):
        with server.client() as http:
            assert http.get("/health").status_code == 200
        server.stop()
    assert "logger=fhirbox.access" in on.log_path.read_text()
    assert "logger=fhirbox.access" not in off.log_path.read_text()
    assert "fhirbox listening on" in off.log_path.read_text()


def raw_exchange(server: ServerProcess, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_requests_refused_before_the_application_carry_an_id_that_their_log_line_names(
    server_factory: Callable[..., ServerProcess], log_format: str
) -> None:
    server = server_factory(env={"FHIRBOX_LOG_FORMAT": log_format})
    too_large = b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(
        f"X-{n}: {'v' * 100}\r\n".encode() for n in range(200)
    )
    garbage = b"NOT HTTP AT ALL\r\n\r\n"
    answers = [raw_exchange(server, too_large), raw_exchange(server, garbage)]
    server.stop()
    lines = parse_lines(server.log_path.read_text(), log_format)
    for answer, status in zip(answers, (b"431", b"400"), strict=True):
        assert answer.split(b"\r\n", 1)[0].split(b" ")[1] == status
        found = re.search(rb"\r\nx-request-id: ([^\r]+)\r\n", answer)
        assert found is not None
        named = [line for line in lines if line.get("request_id") == found.group(1).decode()]
        assert len(named) == 1 and named[0]["level"] == "WARNING"


def test_each_worker_writes_its_last_lines_when_the_server_stops(
    server_factory: Callable[..., ServerProcess],
) -> None:
    """Workers stop by the signal uvicorn re-raises after a graceful shutdown: what they logged last
    must be written before, not held for a turn of the event loop that never comes."""
    server = server_factory(workers=2, env={"FHIRBOX_LOG_LEVEL": "info"})
    with server.client() as http:
        for _ in range(10):
            assert http.get("/health").status_code == 200
    server.stop()
    output = server.log_path.read_text()
    assert output.count("Finished server process") == 2, output[-3000:]
    assert output.count("logger=fhirbox.access") >= 10  # and the readiness checks
