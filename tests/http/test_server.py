"""The connection protocol of a real server (``http/server.py``): heads over 16 KiB or 100 fields are 431
before the application sees them, and neither attack delays other connections; head and keep-alive
timeouts; the connection cap; the open-file limit. Raw sockets to 127.0.0.1 only, every wait bounded."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fhirbox.http.server import MAX_HEAD_BYTES, MAX_HEAD_FIELDS
from tests.support import ROOT, ServerProcess, basic, wait_until

# How long a connection the server should close at once may take to be seen closed on a loaded machine.
PROMPTLY = 2.0


@pytest.fixture
def backend() -> str:
    """The protocol does not touch storage: one backend is enough."""
    return "sqlite"


def lowered_soft_limit() -> int:
    """The open-file soft limit the default server starts with: below the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(soft, max(hard // 2, 256))


@pytest.fixture(scope="module")
def default_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with the default limits, started with an open-file soft limit below the hard one (the
    server should raise it)."""
    tmp = tmp_path_factory.mktemp("default-server")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered_soft_limit(), hard))
    try:
        server = ServerProcess(f"sqlite:///{tmp}/fhirbox.db", tmp).start()
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def timeout_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server whose head, body and keep-alive timeouts are 1 s."""
    tmp = tmp_path_factory.mktemp("timeout-server")
    env = {"FHIRBOX_HEADER_TIMEOUT": "1", "FHIRBOX_KEEPALIVE_TIMEOUT": "1", "FHIRBOX_BODY_TIMEOUT": "1"}
    server = ServerProcess(f"sqlite:///{tmp}/fhirbox.db", tmp, env=env).start()
    yield server
    server.stop()


def connect(server: ServerProcess, timeout: float = 10.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def read_response(sock: socket.socket) -> tuple[int, bytes]:
    """Status and body of one response (Content-Length framed); ConnectionError when closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data[:200]!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a response body")
        body += chunk
    return int(head.split(b" ", 2)[1]), body


def exchange(server: ServerProcess, head: bytes, body: bytes = b"") -> int:
    with connect(server) as sock:
        sock.sendall(head + body)
        return read_response(sock)[0]


def wait_closed(sock: socket.socket, timeout: float) -> float:
    """Seconds until the server closes ``sock`` (EOF or reset), reading and dropping any response;
    fails when it is still open after ``timeout``."""
    start = time.monotonic()
    sock.settimeout(timeout)
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"the connection is still open after {timeout}s") from None
    return time.monotonic() - start


def head_of(size: int) -> bytes:
    """A ``GET /health`` head of exactly ``size`` bytes, padded in one header value."""
    start, end = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: ", b"\r\n\r\n"
    return start + b"a" * (size - len(start) - len(end)) + end


def head_with_fields(count: int) -> bytes:
    """A ``GET /health`` head with ``count`` header fields (Host included)."""
    fields = [b"Host: 127.0.0.1"] + [b"X-Field-%d: %d" % (i, i) for i in range(count - 1)]
    return b"GET /health HTTP/1.1\r\n" + b"\r\n".join(fields) + b"\r\n\r\n"


@pytest.mark.parametrize(
    "head",
    [
        "GET /Patient?name=M\u00fcller HTTP/1.1\r\nHost: x\r\n\r\n".encode(),
        b"POST /Patient HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"FOOBAR / HTTP/1.1\r\nHost: x\r\n\r\n",
    ],
    ids=["raw UTF-8 in the query", "two Content-Lengths", "unknown method"],
)
def test_a_request_the_parser_refuses_is_a_400_operation_outcome(
    default_server: ServerProcess, head: bytes
) -> None:
    with connect(default_server) as sock:
        sock.sendall(head)
        status, body = read_response(sock)
    assert status == 400
    outcome = json.loads(body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert "Invalid HTTP request" in outcome["issue"][0]["diagnostics"]


# --- heads over the limits are 431 before the application sees them -------------------------------


def test_a_head_of_16_kib_is_served_and_one_byte_more_is_431(default_server: ServerProcess) -> None:
    assert exchange(default_server, head_of(MAX_HEAD_BYTES)) == 200
    assert exchange(default_server, head_of(MAX_HEAD_BYTES + 1)) == 431
    assert exchange(default_server, head_of(64 * 1024)) == 431


def test_100_header_fields_are_served_and_101_are_431(default_server: ServerProcess) -> None:
    assert exchange(default_server, head_with_fields(MAX_HEAD_FIELDS)) == 200
    assert exchange(default_server, head_with_fields(MAX_HEAD_FIELDS + 1)) == 431


@pytest.mark.parametrize("too_large", ["fields", "bytes"])
def test_a_refused_head_never_reaches_the_application(default_server: ServerProcess, too_large: str) -> None:
    body = b'{"active": true}'
    extra = (
        b"".join(b"X-Field-%d: 1\r\n" % i for i in range(MAX_HEAD_FIELDS))
        if too_large == "fields"
        else b"X-Pad: " + b"a" * MAX_HEAD_BYTES + b"\r\n"
    )
    authorization = basic(*ROOT)["Authorization"].encode()
    head = (
        b"PUT /Patient/refused-" + too_large.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: " + authorization + b"\r\nContent-Type: application/json\r\n"
        b"Content-Length: %d\r\n" % len(body) + extra + b"\r\n"
    )
    with connect(default_server) as sock:
        sock.sendall(head + body)
        status, answer = read_response(sock)
        assert status == 431
        assert b"OperationOutcome" in answer
        wait_closed(sock, PROMPTLY)
    with default_server.client(auth=ROOT) as http:
        assert http.get(f"/Patient/refused-{too_large}").status_code == 404


def _huge_value(sock: socket.socket, stop: threading.Event) -> None:
    """The 64 MB header value of the issue, in 64 KiB writes."""
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: ")
    chunk = b"a" * 65536
    for _ in range(64 * 1024 * 1024 // len(chunk)):
        if stop.is_set():
            return
        sock.sendall(chunk)
    sock.sendall(b"\r\n\r\n")


def _repeated_lines(sock: socket.socket, stop: threading.Event) -> None:
    """The 100,000 repeated header lines (1.4 MB) of the issue."""
    lines = b"X-Repeat: 123456\r\n" * 1000
    sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    for _ in range(100):
        if stop.is_set():
            return
        sock.sendall(lines)
    sock.sendall(b"\r\n")


def _attack_once(server: ServerProcess, send: Callable[..., None], stop: threading.Event) -> str:
    """One attacking connection: "431" when its answer is 431, "closed" when the server cut it off
    before it could read one, otherwise the status it got."""
    with connect(server) as sock:
        try:
            send(sock, stop)
            status, _ = read_response(sock)
            return str(status)
        except (ConnectionError, BrokenPipeError):
            pass
        try:  # the 431 may still be readable after a cut-off write
            status, _ = read_response(sock)
            return str(status)
        except OSError:
            return "closed"


@pytest.mark.parametrize("attack", [_huge_value, _repeated_lines], ids=["64-MB-value", "100k-lines"])
def test_while_a_connection_sends_a_huge_head_health_answers_within_1s(
    default_server: ServerProcess, attack: Callable[..., None]
) -> None:
    outcomes: list[str] = []
    stop = threading.Event()

    def attacker() -> None:
        # Attack again and again for 1.5 s, so that health checks run while an attack is under way.
        until = time.monotonic() + 1.5
        while not stop.is_set() and (not outcomes or time.monotonic() < until):
            outcomes.append(_attack_once(default_server, attack, stop))

    thread = threading.Thread(target=attacker, daemon=True)
    thread.start()
    slowest = 0.0
    try:
        while thread.is_alive():
            start = time.monotonic()
            try:
                response = httpx.get(f"{default_server.url}/health", timeout=1.0)
            except httpx.TimeoutException:
                pytest.fail("GET /health did not answer within 1 s during the attack")
            assert response.status_code == 200
            slowest = max(slowest, time.monotonic() - start)
    finally:
        stop.set()
        thread.join(30)
    assert slowest < 1.0, f"GET /health took {slowest:.2f}s during the attack"
    assert outcomes and set(outcomes) <= {"431", "closed"}, outcomes


# --- timeouts ------------------------------------------------------------------------------------------


def test_a_connection_without_a_complete_head_is_closed_after_the_header_timeout(
    timeout_server: ServerProcess,
) -> None:
    start = time.monotonic()
    silent = connect(timeout_server)
    partial = connect(timeout_server)
    partial.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    with silent, partial:
        wait_closed(silent, 5.0)
        assert time.monotonic() - start > 0.5  # not at once: after the timeout
        wait_closed(partial, 5.0)
        assert time.monotonic() - start < 5.0


@pytest.mark.parametrize("first_request", [False, True], ids=["new-connection", "after-a-request"])
def test_a_head_sent_one_byte_at_a_time_is_closed_after_the_header_timeout(
    timeout_server: ServerProcess, first_request: bool
) -> None:
    """The deadline is for the whole head, not for each byte: a drip does not keep the connection."""
    with connect(timeout_server) as sock:
        if first_request:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock)[0] == 200
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Drip: ")
        start = time.monotonic()
        sock.settimeout(0.25)
        closed = False
        while time.monotonic() - start < 5.0:
            try:
                sock.sendall(b"a")
                if sock.recv(65536) == b"":
                    closed = True
                    break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = True
                break
        elapsed = time.monotonic() - start
        assert closed, "a head dripping one byte every 0.25 s was still open after 5 s"
        assert 0.5 < elapsed < 5.0


def test_an_idle_keep_alive_connection_is_closed_after_the_keepalive_timeout(
    timeout_server: ServerProcess,
) -> None:
    with connect(timeout_server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert read_response(sock)[0] == 200
        elapsed = wait_closed(sock, 4.0)  # uvicorn's default keep-alive is 5 s
        assert elapsed > 0.5


# --- the connection cap and the open-file limit ----------------------------------------------------


def _open_answering(server: ServerProcess, count: int) -> list[socket.socket] | None:
    """``count`` connections that each answered a keep-alive ``GET /health``, or None."""
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = connect(server, timeout=PROMPTLY)
            socks.append(sock)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock)[0] == 200
        return socks
    except OSError:
        for sock in socks:
            sock.close()
        return None


def test_connections_beyond_max_connections_are_closed_at_once(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory(env={"FHIRBOX_MAX_CONNECTIONS": "5"})
    # The start-up health check's connection may take a moment to be gone.
    first = wait_until(lambda: _open_answering(server, 5), retry_on=())
    extra = [connect(server) for _ in range(5)]
    try:
        for sock in extra:
            assert wait_closed(sock, PROMPTLY) < PROMPTLY
        for sock in first:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert read_response(sock)[0] == 200
        first.pop().close()
        again = wait_until(lambda: _open_answering(server, 1), retry_on=())
        again[0].close()
    finally:
        for sock in first + extra:
            sock.close()


def test_the_server_raises_its_open_file_soft_limit_to_the_hard_limit(default_server: ServerProcess) -> None:
    assert default_server.proc is not None
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert lowered_soft_limit() < hard, "the test needs a hard limit above 256 to start the server below it"
    limits = Path(f"/proc/{default_server.proc.pid}/limits").read_text()
    line = next(line for line in limits.splitlines() if line.startswith("Max open files"))
    soft_now, hard_now = line.split()[3:5]
    assert soft_now == hard_now == str(hard)


def test_a_body_that_never_arrives_is_408_and_its_connection_closed(timeout_server: ServerProcess) -> None:
    """A complete head announcing a body that never comes must not hold its connection forever."""
    heads = [
        b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n",
        b"PUT /Patient/p HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: {basic(*ROOT)['Authorization']}\r\n".encode(),
    ]
    for head in heads:
        with connect(timeout_server) as sock:
            sock.sendall(head + b"Content-Length: 10\r\n\r\n")
            status, body = read_response(sock)
            assert status == 408, body
            assert b"did not arrive" in body
            assert wait_until(lambda sock=sock: sock.recv(1) == b"", PROMPTLY, retry_on=(TimeoutError,))


def test_a_response_is_sent_in_one_piece(default_server: ServerProcess) -> None:
    """Head and body leave in one write: the first read after a request holds the whole response."""
    request = b"GET /.well-known/smart-configuration HTTP/1.1\r\nHost: x\r\n\r\n"
    with connect(default_server) as sock:
        for _ in range(20):
            sock.sendall(request)
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            length = next(
                int(line.partition(b":")[2])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            assert len(body) == length > 0


def test_a_head_request_gets_its_head_and_the_connection_goes_on(default_server: ServerProcess) -> None:
    with connect(default_server) as sock:
        sock.sendall(b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        assert data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n")
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        status, _ = read_response(sock)
        assert status == 200


def test_expect_100_continue_is_answered_before_the_body_is_sent(default_server: ServerProcess) -> None:
    body = b"grant_type=client_credentials"
    head = (
        b"POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        + f"Authorization: {basic(*ROOT)['Authorization']}\r\n".encode()
        + f"Expect: 100-continue\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    )
    with connect(default_server, timeout=PROMPTLY) as sock:
        sock.sendall(head)
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(65536)  # a TimeoutError here: the server held the interim answer
        assert interim.startswith(b"HTTP/1.1 100 ")
        sock.settimeout(10.0)
        sock.sendall(body)
        status, answer = read_response(sock)
        assert status == 200 and b"access_token" in answer


def test_a_pipelined_head_request_is_answered_before_the_next(default_server: ServerProcess) -> None:
    """A HEAD response (never followed by a body write) still goes out when the next request is
    already waiting behind it on the connection."""
    with connect(default_server, timeout=PROMPTLY) as sock:
        sock.sendall(
            b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n"
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        )
        data = b""
        while data.count(b"HTTP/1.1 ") < 3 or not data.endswith(b"}"):
            chunk = sock.recv(65536)  # a TimeoutError: a response was never sent
            assert chunk, data
            data += chunk
        statuses = [line for line in data.split(b"\r\n") if line.startswith(b"HTTP/1.1 ")]
        assert len(statuses) == 3 and statuses[2] == b"HTTP/1.1 200 OK"
