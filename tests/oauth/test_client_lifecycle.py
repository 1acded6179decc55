"""Closing is final: a deleted or deactivated Client's Sessions are closed for good; root stays."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx
import pytest

from fhirbox.auth import secrets
from tests.oauth.support import SECRET, bearer, client_body, get_token, put_client
from tests.support import FRESHNESS_BOUND, ROOT, ServerProcess, wait_until


async def refresh(http: httpx.AsyncClient, client_id: str, secret: str, token: str) -> httpx.Response:
    data = {"grant_type": "refresh_token", "refresh_token": token}
    return await http.post("/auth/token", data=data, auth=(client_id, secret))


async def allow(root: httpx.AsyncClient, client_id: str) -> None:
    policy = {"engine": "allow", "link": [{"reference": f"Client/{client_id}"}]}
    assert (await root.put(f"/AccessPolicy/{client_id}", json=policy)).status_code in (200, 201)


async def test_recreating_a_deleted_client_does_not_revive_its_tokens(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await put_client(root, "api-client", client_body(refresh_token=True))
    await allow(root, "api-client")
    token = await get_token(client, "api-client")
    assert (await client.get("/Patient", headers=bearer(token["access_token"]))).status_code == 200

    assert (await root.delete("/Client/api-client")).status_code == 200
    [session] = [e["resource"] for e in (await root.get("/Session")).json()["entry"]]
    assert session["active"] is False and session["end_reason"] == "client deleted"

    await put_client(root, "api-client", {**client_body(refresh_token=True), "secret": "a-new-secret"})
    assert (await client.get("/Patient", headers=bearer(token["access_token"]))).status_code == 401
    refreshed = await refresh(client, "api-client", "a-new-secret", token["refresh_token"])
    assert refreshed.status_code == 400 and refreshed.json()["error"] == "invalid_grant"


async def test_reactivating_a_client_does_not_revive_its_tokens(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await put_client(root, "api-client", client_body())
    await allow(root, "api-client")
    token = (await get_token(client, "api-client"))["access_token"]
    await put_client(root, "api-client", {**client_body(), "active": False})
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 401
    await put_client(root, "api-client", client_body())
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 401
    sessions = (await root.get("/Session", params={"client.id": "api-client"})).json()["entry"]
    assert [e["resource"]["end_reason"] for e in sessions] == ["client deactivated"]
    fresh = (await get_token(client, "api-client"))["access_token"]
    assert (await client.get("/Patient", headers=bearer(fresh))).status_code == 200


async def test_changing_a_secret_keeps_the_clients_tokens(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await put_client(root, "api-client", client_body())
    await allow(root, "api-client")
    token = (await get_token(client, "api-client"))["access_token"]
    await put_client(root, "api-client", {**client_body(), "secret": "rotated-" + SECRET})
    assert (await client.get("/Patient", headers=bearer(token))).status_code == 200


@pytest.mark.parametrize(
    ("method", "body"),
    [("DELETE", None), ("PUT", {"active": False, "grant_types": ["basic"]}), ("PATCH", {"active": False})],
)
async def test_root_cannot_be_deleted_or_deactivated(
    root: httpx.AsyncClient, method: str, body: dict[str, object] | None
) -> None:
    headers = {"Content-Type": "application/merge-patch+json"} if method == "PATCH" else {}
    response = await root.request(method, f"/Client/{ROOT[0]}", json=body, headers=headers)
    assert response.status_code == 409, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    assert "root client" in response.json()["issue"][0]["diagnostics"]
    assert (await root.get("/Patient")).status_code == 200


def test_a_deleted_clients_tokens_stay_dead_on_another_server(
    server_factory: Callable[..., ServerProcess],
) -> None:
    first, second = server_factory(), server_factory()
    with first.client(auth=ROOT) as admin, second.client() as other:
        admin.put("/Client/api-client", json=client_body())
        admin.put(
            "/AccessPolicy/api-client", json={"engine": "allow", "link": [{"reference": "Client/api-client"}]}
        )
        grant = {"grant_type": "client_credentials"}
        token = admin.post("/auth/token", data=grant, auth=("api-client", SECRET)).json()["access_token"]
        wait_until(lambda: other.get("/Patient", headers=bearer(token)).status_code == 200, FRESHNESS_BOUND)

        assert admin.delete("/Client/api-client").status_code == 200
        assert admin.put("/Client/api-client", json=client_body()).status_code == 201
        wait_until(lambda: other.get("/Patient", headers=bearer(token)).status_code == 401, FRESHNESS_BOUND)
        fresh = admin.post("/auth/token", data=grant, auth=("api-client", SECRET)).json()["access_token"]
        wait_until(lambda: other.get("/Patient", headers=bearer(fresh)).status_code == 200, FRESHNESS_BOUND)
        assert other.get("/Patient", headers=bearer(token)).status_code == 401


async def test_a_client_allowed_to_write_clients_cannot_take_over_root(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    admin = ("client-admin", "admin-secret")
    await put_client(root, admin[0], {"secret": admin[1], "grant_types": ["basic"]})
    await allow(root, admin[0])
    takeover = {"secret": "pwned", "grant_types": ["basic", "client_credentials"]}
    response = await client.put(f"/Client/{ROOT[0]}", json=takeover, auth=admin)
    assert response.status_code == 409, response.text
    assert (await client.get("/Patient", auth=(ROOT[0], "pwned"))).status_code == 401
    assert (await root.get("/Patient")).status_code == 200


async def test_a_token_issued_while_its_client_changed_is_refused_and_closed(
    root: httpx.AsyncClient, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deactivating and re-activating a Client while one of its token requests waits for the secret
    hash must not leave that request with a working token."""
    await put_client(root, "api-client", client_body())
    await allow(root, "api-client")
    hashing, release = threading.Event(), threading.Event()
    real_verify = secrets.verify_secret

    def slow_verify(secret: str, hashed: str) -> bool:
        if secret == SECRET:
            hashing.set()
            assert release.wait(10)
        return real_verify(secret, hashed)

    monkeypatch.setattr(secrets, "verify_secret", slow_verify)
    grant = {"grant_type": "client_credentials"}
    pending = asyncio.create_task(client.post("/auth/token", data=grant, auth=("api-client", SECRET)))
    assert await asyncio.to_thread(hashing.wait, 10)
    merge = {"Content-Type": "application/merge-patch+json"}
    assert (await root.patch("/Client/api-client", json={"active": False}, headers=merge)).status_code == 200
    assert (await root.patch("/Client/api-client", json={"active": True}, headers=merge)).status_code == 200
    release.set()
    response = await pending
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    sessions = (await root.get("/Session", params={"client.id": "api-client"})).json()["entry"]
    assert [entry["resource"]["active"] for entry in sessions] == [False]
