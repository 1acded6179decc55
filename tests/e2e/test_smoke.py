"""The smallest end-to-end checks: the server answers and the API is closed without credentials."""

from __future__ import annotations

import httpx

from tests.support import ROOT, ServerProcess


async def test_health_is_open_and_api_is_closed(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    response = await client.get("/Patient")
    assert response.status_code == 401
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "Basic" in response.headers["www-authenticate"]


async def test_root_creates_and_reads_a_patient(root: httpx.AsyncClient) -> None:
    created = await root.put("/Patient/p1", json={"name": [{"family": "Doe"}]})
    assert created.status_code == 201
    read = await root.get("/Patient/p1")
    assert read.status_code == 200
    assert read.json()["name"] == [{"family": "Doe"}]


def test_real_server_process_serves_root(server: ServerProcess) -> None:
    with server.client(auth=ROOT) as http:
        assert http.put("/Patient/x", json={}).status_code == 201
        assert http.get("/Patient/x").json()["id"] == "x"
