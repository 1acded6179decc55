"""Test helpers: databases on both backends, in-process apps and real server processes."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT_ID = "root"
ROOT_SECRET = "root-test-secret"
ROOT = (ROOT_ID, ROOT_SECRET)
REPO = Path(__file__).resolve().parent.parent


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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(condition: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll ``condition`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except Exception as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last: {last!r})")


class ServerProcess:
    """A real ``fhirbox serve`` subprocess on a free loopback port."""

    def __init__(self, database_url: str, env: dict[str, str] | None = None, workers: int = 1) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.database_url = database_url
        self.env = {
            **os.environ,
            "FHIRBOX_ROOT_CLIENT_SECRET": ROOT_SECRET,
            "FHIRBOX_CHANGE_POLL_INTERVAL": "0.1",
            "FHIRBOX_LOG_LEVEL": "warning",
            **(env or {}),
        }
        self.workers = workers
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"fhirbox-test-{self.port}.log"

    def start(self, timeout: float = 30.0) -> ServerProcess:
        log = self.log_path.open("wb")
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

        def healthy() -> bool:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            return httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200

        deadline = time.monotonic() + timeout
        while True:
            try:
                if healthy():
                    return self
            except RuntimeError:
                raise
            except Exception:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError(f"server did not become healthy: {self.output()}")
            time.sleep(0.05)

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
