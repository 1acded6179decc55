"""The ``fhirbox`` command and a real server process: help, flags over env, signals, health, readiness."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from fhirbox.settings import SETTINGS
from tests.support import (
    REPO,
    ROOT,
    ROOT_ID,
    ROOT_SECRET,
    ServerProcess,
    _pg_execute,
    basic,
    free_port,
    wait_until,
)


def fhirbox(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "fhirbox.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_help_lists_every_command_and_option() -> None:
    top = fhirbox("--help")
    for command in ("serve", "settings"):
        assert command in top
    serve = fhirbox("serve", "--help")
    for option in ("--host", "--port", "--database", "--workers"):
        assert option in serve
    for env in ("FHIRBOX_HOST", "FHIRBOX_PORT", "FHIRBOX_DATABASE_URL", "FHIRBOX_WORKERS"):
        assert env in serve
    table = fhirbox("settings")
    for setting in SETTINGS:
        assert setting.env in table


def test_flags_win_over_environment_variables(
    server_factory: Callable[..., ServerProcess], tmp_path: Path
) -> None:
    env_port = free_port()
    env_db = tmp_path / "from-env.db"
    server = server_factory(
        env={"FHIRBOX_PORT": str(env_port), "FHIRBOX_DATABASE_URL": f"sqlite:///{env_db}"}
    )
    with server.client(auth=ROOT) as http:
        assert http.put("/Patient/flagged", json={}).status_code == 201
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{env_port}/health", timeout=1.0)
    assert not env_db.exists()


def test_health_and_ready_answer_200(server: ServerProcess) -> None:
    with server.client() as http:
        assert http.get("/health").status_code == 200
        assert http.get("/ready").status_code == 200


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_finishes_in_flight_requests_and_exits_cleanly(
    server_factory: Callable[..., ServerProcess], stop_signal: int
) -> None:
    server = server_factory(env={"FHIRBOX_LOG_LEVEL": "info"})
    body = b'{"resourceType": "Patient", "note": "' + b"x" * 20_000 + b'"}'
    auth = basic(ROOT_ID, ROOT_SECRET)["Authorization"]
    head = (
        f"PUT /Patient/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {auth}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as sock:
        sock.sendall(head + body[:1000])
        # The request is in flight once the server has read what was sent (on a busy machine the
        # signal could otherwise come first, and an idle connection is closed at once).
        wait_until(lambda: _unread_by_server(server.port, sock.getsockname()[1]) == 0, timeout=10)
        server.signal(stop_signal)
        wait_until(lambda: "Shutting down" in server.output(), timeout=10)
        sock.sendall(body[1000:])
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
    assert server.wait(30) == 0
    if server.database_url.startswith("sqlite"):
        database = Path(server.database_url.removeprefix("sqlite:///"))
        assert database.exists()
        assert not Path(f"{database}-wal").exists()  # the last connection closed and checkpointed


def _unread_by_server(server_port: int, client_port: int) -> int | None:
    """Bytes the server's end of a loopback TCP connection has received but not read (Linux's
    /proc/net/tcp), or None when that end is not found."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, queues = fields[1], fields[2], fields[4]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return int(queues.split(":")[1], 16)
    return None


def test_ready_is_503_when_the_database_goes_away(
    backend: str, server_factory: Callable[..., ServerProcess], database_url: str
) -> None:
    if backend != "postgres":
        pytest.skip("an honest outage needs a database that can be dropped under the server: PostgreSQL")
    base = database_url.split("?", 1)[0]
    name = f"fhirbox_ready_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_execute(base, f"CREATE DATABASE {name}"))
    try:
        server = server_factory(url=base.rsplit("/", 1)[0] + f"/{name}")
        with server.client() as http:
            assert http.get("/ready").status_code == 200
            asyncio.run(_pg_execute(base, f"DROP DATABASE {name} WITH (FORCE)"))
            wait_until(lambda: http.get("/ready").status_code == 503, timeout=20)
            assert http.get("/health").status_code == 200
    finally:
        asyncio.run(_pg_execute(base, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def test_an_invalid_setting_is_a_clear_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "fhirbox.cli", "serve"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        env={**os.environ, "FHIRBOX_PORT": "not-a-port"},
    )
    assert result.returncode != 0
    assert "FHIRBOX_PORT" in result.stderr
    assert "Traceback" not in result.stderr
