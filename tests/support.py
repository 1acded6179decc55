"""Test helpers: databases on both backends, in-process apps and real server processes."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import os
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from fhirbox.app import App, create_app
from fhirbox.settings import Settings

ROOT_ID = "root"
ROOT_SECRET = "root-test-secret"
ROOT = (ROOT_ID, ROOT_SECRET)
REPO = Path(__file__).resolve().parent.parent

# Tests sign with ES256 unless they are about another algorithm: generating the RSA-2048 key of the
# product's default RS256 costs ~0.25 s for every fresh database (every in-process app and server),
# a P-256 key ~1 ms. Tests that need RS256 say so with ``@pytest.mark.signing_alg("RS256")``; tests
# that check the product's default use ``@pytest.mark.product_signing_alg`` and get no setting at all.
TEST_SIGNING_ALG = "ES256"

# FHIRBOX_CHANGE_POLL_INTERVAL of the real server processes tests start.
TEST_CHANGE_POLL_INTERVAL = 0.1
# The README promises that a change made through one server process governs the others "within a
# second" (at the default 0.25 s poll interval); test servers poll every 0.1 s, so on an idle machine
# a change is seen after ~0.1-0.2 s. Tests wait up to this bound before failing: the promise plus a
# margin for a loaded 2-core machine (another process can hold the CPU for a second), still far
# below the "never" of a cache nobody invalidates, which is what these tests exist to catch.
FRESHNESS_BOUND = 1.0 + 4.0

# How long ``wait_until`` waits by default, and how often it tries.
WAIT_TIMEOUT = 10.0
WAIT_INTERVAL = 0.05


def run_fhirbox(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    """``python -m fhirbox ARGS`` with the test environment's FHIRBOX_* variables cleared."""
    environ = {name: value for name, value in os.environ.items() if not name.startswith("FHIRBOX_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "fhirbox", *args],
        capture_output=True, text=True, cwd=cwd, timeout=60, env=environ,
    )  # fmt: skip


def one_line_error(done: subprocess.CompletedProcess[str], status: int, *expected: str) -> str:
    """Assert ``done`` failed with ``status``, one line on stderr, no traceback, nothing on stdout."""
    assert done.returncode == status, (done.returncode, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("fhirbox: ")
    for text in expected:
        assert text in lines[0]
    assert "listening" not in done.stdout + done.stderr
    return lines[0]


def basic(client_id: str, secret: str) -> dict[str, str]:
    token = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def postgres_base_url() -> str | None:
    """The PostgreSQL URL for tests, or None (skip) when unset or unreachable and not required."""
    url = os.environ.get("FHIRBOX_TEST_POSTGRES_URL")
    required = os.environ.get("FHIRBOX_REQUIRE_POSTGRES") == "1"
    if not url:
        if required:
            pytest.fail("FHIRBOX_REQUIRE_POSTGRES=1 but FHIRBOX_TEST_POSTGRES_URL is not set")
        pytest.skip(
            "PostgreSQL tests need FHIRBOX_TEST_POSTGRES_URL (e.g. postgresql://postgres@127.0.0.1/test)"
        )
    try:
        asyncio.run(_pg_execute(url, "SELECT 1"))
    except Exception as exc:
        if required:
            pytest.fail(f"PostgreSQL at {url} is required but unreachable: {exc}")
        pytest.skip(f"PostgreSQL at {url} is unreachable: {exc}")
    return url


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextmanager
def postgres_schema_url(base: str) -> Iterator[str]:
    """A URL whose search_path is a fresh, empty schema, dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(base, f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}search_path={schema}"
    finally:
        asyncio.run(_pg_execute(base, f"DROP SCHEMA {schema} CASCADE"))


def free_port() -> int:
    """A loopback port that is free now, chosen below the kernel's ephemeral range (32768-60999 on
    Linux) so that no outgoing connection of a concurrent test, worker or other test run grabs it
    before the server binds it. Another server can still take it first: ``ServerProcess.start``
    then retries on a new port."""
    while True:
        port = random.randint(20000, 32000)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


class _Poll:
    """The deadline of one ``wait_until``: tries until it passes, once more after, then fails."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout

    def done(self, value: Any, error: BaseException | None) -> bool:
        if error is None and value:
            return True
        if time.monotonic() < self.deadline:
            return False
        last = f"{error!r}" if error is not None else f"{value!r}"
        raise AssertionError(f"condition not met within {self.timeout}s (last: {last})") from error


class MovableClock:
    """A clock for the in-process app that reads the wall clock plus an offset tests can move forward,
    so a test of an expiry takes no time."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


def wait_until(
    condition: Callable[[], Any],
    timeout: float = WAIT_TIMEOUT,
    interval: float = WAIT_INTERVAL,
    retry_on: tuple[type[BaseException], ...] = (httpx.TransportError,),
) -> Any:
    """Call ``condition`` until it returns a truthy value, and return that; fail after ``timeout`` s.

    The one way tests wait for something that happens elsewhere (another process, a background task,
    the wall clock). ``retry_on`` exceptions (by default a connection refused, reset or timed out) count
    as "not yet"; any other exception, an ``assert`` inside ``condition`` included, fails at once.
    The condition is always tried at least once after the deadline, so a slow first try cannot fail it.
    In an async test use ``await eventually(...)``, the same loop: sleeping here would block the event
    loop that the in-process app and its background tasks run on.
    """
    poll = _Poll(timeout)
    while True:
        value: Any = None
        error: BaseException | None = None
        try:
            value = condition()
        except retry_on as exc:
            error = exc
        if poll.done(value, error):
            return value
        time.sleep(interval)


async def eventually(
    condition: Callable[[], Any] | Callable[[], Awaitable[Any]],
    timeout: float = WAIT_TIMEOUT,
    interval: float = WAIT_INTERVAL,
    retry_on: tuple[type[BaseException], ...] = (httpx.TransportError,),
) -> Any:
    """``wait_until`` for async tests: ``condition`` may be a plain or an async function, and the
    event loop keeps running between tries."""
    poll = _Poll(timeout)
    while True:
        value: Any = None
        error: BaseException | None = None
        try:
            value = condition()
            if inspect.isawaitable(value):
                value = await value
        except retry_on as exc:
            error = exc
        if poll.done(value, error):
            return value
        await asyncio.sleep(interval)


class _PortTaken(Exception):
    """The server could not bind its port: someone took it between ``free_port`` and the bind."""


class ServerProcess:
    """A real ``fhirbox serve`` subprocess on a free loopback port, logging to ``log_dir``.

    It signs with ``signing_alg`` (``TEST_SIGNING_ALG`` unless given; ``None``: the product's default,
    no ``FHIRBOX_SIGNING_ALG`` at all); ``env`` wins over every default here.
    """

    def __init__(
        self,
        database_url: str,
        log_dir: Path,
        env: dict[str, str] | None = None,
        workers: int = 1,
        signing_alg: str | None = TEST_SIGNING_ALG,
    ) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "FHIRBOX_ROOT_CLIENT_SECRET": ROOT_SECRET,
            "FHIRBOX_CHANGE_POLL_INTERVAL": str(TEST_CHANGE_POLL_INTERVAL),
            "FHIRBOX_LOG_LEVEL": "warning",
        }
        self.env.pop("FHIRBOX_SIGNING_ALG", None)
        if signing_alg is not None:
            self.env["FHIRBOX_SIGNING_ALG"] = signing_alg
        self.env.update(env or {})
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self._use_port(free_port())

    def _use_port(self, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = self.log_dir / f"server-{port}-{uuid.uuid4().hex[:6]}.log"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start and wait until ``/health`` answers; a port taken meanwhile is retried on a new one."""
        for _ in range(5):
            self._spawn()
            try:
                wait_until(self._healthy, timeout=timeout)
            except _PortTaken:
                self._use_port(free_port())
                continue
            except AssertionError:
                self.stop()
                raise AssertionError(f"server did not become healthy: {self.output()}") from None
            return self
        raise AssertionError(f"no free port after 5 tries: {self.output()}")

    def _spawn(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable, "-m", "fhirbox.cli", "serve",
                    "--port", str(self.port),
                    "--database", self.database_url,
                    "--workers", str(self.workers),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
            )  # fmt: skip

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            output = self.output()
            if "address already in use" in output.lower():
                raise _PortTaken(output)
            raise RuntimeError(f"server exited with {self.proc.returncode}: {output}")
        return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, **kwargs)


@asynccontextmanager
async def started_app(settings: Settings, **overrides: Any) -> AsyncIterator[App]:
    """An in-process app with ``settings`` changed by ``overrides``, started and stopped around the block."""
    application = create_app(dataclasses.replace(settings, **overrides))
    await application.startup()
    try:
        yield application
    finally:
        await application.shutdown()


@asynccontextmanager
async def from_address(app: App, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client whose requests reach the in-process ``app`` from ``address`` (the ASGI peer)."""
    transport = httpx.ASGITransport(app=app, client=(address, 4711))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http
