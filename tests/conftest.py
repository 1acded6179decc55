"""Fixtures: every storage-touching test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest

from fhirbox.app import App, create_app
from fhirbox.settings import Settings
from tests.support import (
    ROOT,
    ROOT_SECRET,
    TEST_SIGNING_ALG,
    MovableClock,
    ServerProcess,
    postgres_base_url,
    postgres_schema_url,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", f"signing_alg(alg): the test's apps and servers sign with alg, not {TEST_SIGNING_ALG}"
    )
    config.addinivalue_line(
        "markers",
        "product_signing_alg: the test's apps and servers get no signing_alg setting: the product's default",
    )


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
def signing_alg(request: pytest.FixtureRequest) -> str | None:
    """The test's signing algorithm: ``TEST_SIGNING_ALG``, the ``signing_alg`` marker's, or None (no
    setting: the product's default) under the ``product_signing_alg`` marker."""
    if request.node.get_closest_marker("product_signing_alg") is not None:
        return None
    marker = request.node.get_closest_marker("signing_alg")
    return str(marker.args[0]) if marker is not None else TEST_SIGNING_ALG


@pytest.fixture
def settings(database_url: str, signing_alg: str | None) -> Settings:
    return Settings(
        database_url=database_url,
        root_client_secret=ROOT_SECRET,
        base_url="http://testserver",
        change_poll_interval=0.05,
        **({"signing_alg": signing_alg} if signing_alg is not None else {}),
    )


@pytest.fixture
def clock() -> MovableClock:
    """The in-process app's clock: the wall clock until a test moves it forward."""
    return MovableClock()


@pytest.fixture
async def app(settings: Settings, clock: MovableClock) -> AsyncIterator[App]:
    """The application in process, started and stopped around the test."""
    application = create_app(settings, clock=clock)
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
def server_factory(
    database_url: str, signing_alg: str | None, tmp_path: Path
) -> Iterator[Callable[..., ServerProcess]]:
    """Starts real ``fhirbox serve`` processes on the test database; all are stopped afterwards.
    Their logs are kept in the test's ``tmp_path``."""
    started: list[ServerProcess] = []

    def start(env: dict[str, str] | None = None, workers: int = 1, url: str | None = None) -> ServerProcess:
        server = ServerProcess(
            url or database_url, tmp_path, env=env, workers=workers, signing_alg=signing_alg
        ).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def server(server_factory: Callable[..., ServerProcess]) -> ServerProcess:
    """One real server process on the test database."""
    return server_factory()
