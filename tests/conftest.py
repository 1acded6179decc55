"""Fixtures: every storage-touching test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fhirbox.app import App, create_app
from fhirbox.settings import Settings
from tests.support import ROOT, ROOT_SECRET, ServerProcess, postgres_base_url, postgres_schema_url


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(backend: str, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database of the parametrised backend."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path}/fhirbox.db"
        return
    base = postgres_base_url()
    assert base is not None
    with postgres_schema_url(base) as url:
        yield url


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        root_client_secret=ROOT_SECRET,
        base_url="http://testserver",
        change_poll_interval=0.05,
    )


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[App]:
    """The application in process, started and stopped around the test."""
    application = create_app(settings)
    await application.startup()
    try:
        yield application
    finally:
        await application.shutdown()


@pytest.fixture
async def client(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client talking to the in-process app, with no credentials."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


@pytest.fixture
async def root(app: App) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client authenticated as the root client with Basic."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver", auth=ROOT) as http:
        yield http


@pytest.fixture
def server_factory(database_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Starts real ``fhirbox serve`` processes on the test database; all are stopped afterwards."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, workers: int = 1, url: str | None = None) -> ServerProcess:
        server = ServerProcess(url or database_url, env=env, workers=workers).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """One real server process on the test database."""
    return server_factory()
