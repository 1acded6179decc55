"""Fixtures for AccessPolicy tests: API clients that authenticate with Basic, and policy helpers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest

from fhirbox.app import App
from fhirbox.policy.compile import compile_policy
from fhirbox.policy.request_object import StaticRequest

ClientMaker = Callable[..., Awaitable[httpx.AsyncClient]]

FORBIDDEN = {
    "resourceType": "OperationOutcome",
    "id": "forbidden",
    "text": {"status": "generated", "div": "Forbidden"},
    "issue": [{"severity": "fatal", "code": "forbidden", "diagnostics": "Forbidden"}],
}


@pytest.fixture
async def api_client(app: App, root: httpx.AsyncClient) -> AsyncIterator[ClientMaker]:
    """``await api_client("id")``: creates a Client allowed to use Basic and returns an HTTP client
    authenticated as it (secret ``<id>-secret``)."""
    opened: list[httpx.AsyncClient] = []

    async def make(client_id: str, **fields: Any) -> httpx.AsyncClient:
        body = {"secret": f"{client_id}-secret", "grant_types": ["basic"], **fields}
        created = await root.put(f"/Client/{client_id}", json=body)
        assert created.status_code in (200, 201), created.text
        http = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://testserver",
            auth=(client_id, f"{client_id}-secret"),
        )
        opened.append(http)
        return http

    yield make
    for http in opened:
        await http.aclose()


def evaluate(policy: dict[str, Any], request: dict[str, Any]) -> bool:
    """Whether the compiled ``policy`` passes for the request object ``request``."""
    return compile_policy(policy).allows(StaticRequest(request))
