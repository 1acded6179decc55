"""Client secrets: hashed with scrypt at rest, never returned, kept when omitted, checked at once."""

from __future__ import annotations

import asyncio
import base64
import sqlite3
from typing import Any
from urllib.parse import quote_plus

import httpx
import orjson
import pytest

from fhirbox.auth import secrets as secrets_module
from fhirbox.auth.secrets import SecretVerifier, hash_secret, is_secret_hash, verify_secret
from fhirbox.settings import Settings
from tests.support import basic

MERGE = {"Content-Type": "application/merge-patch+json"}
CLIENT = {"secret": "plain-secret-value", "grant_types": ["basic"]}


async def stored_client_bodies(settings: Settings, client_id: str) -> list[dict[str, Any]]:
    """Every stored version of a Client, read from the database itself, not through the API."""
    url = settings.database_url
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        with sqlite3.connect(path) as conn:
            rows = conn.execute(
                "SELECT body FROM resource WHERE type = 'Client' AND id = ? "
                "UNION ALL SELECT body FROM history WHERE type = 'Client' AND id = ?",
                (client_id, client_id),
            ).fetchall()
        return [orjson.loads(row[0]) for row in rows]
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT body::text FROM resource WHERE type = 'Client' AND id = $1 "
            "UNION ALL SELECT body::text FROM history WHERE type = 'Client' AND id = $1",
            client_id,
        )
    finally:
        await conn.close()
    return [orjson.loads(row[0]) for row in rows]


def assert_no_secret(response: httpx.Response) -> None:
    assert "plain-secret-value" not in response.text
    assert "scrypt$" not in response.text
    assert '"secret"' not in response.text
    assert "secret:" not in response.text


async def test_secret_is_never_returned_by_any_response(root: httpx.AsyncClient) -> None:
    assert_no_secret(await root.put("/Client/c", json=CLIENT))
    assert_no_secret(await root.put("/Client/c", json=CLIENT, params={"_format": "yaml"}))
    assert_no_secret(await root.post("/Client", json={**CLIENT, "id": "c2"}))
    assert_no_secret(await root.get("/Client/c"))
    assert_no_secret(await root.get("/Client/c", headers={"Accept": "text/yaml"}))
    assert_no_secret(await root.get("/Client"))
    assert_no_secret(await root.get("/Client", params={"_elements": "secret,id"}))
    assert_no_secret(await root.get("/Client/c/_history"))
    version = (await root.get("/Client/c")).json()["meta"]["versionId"]
    assert_no_secret(await root.get(f"/Client/c/_history/{version}"))
    assert_no_secret(await root.patch("/Client/c", json={"description": "x"}, headers=MERGE))
    assert_no_secret(await root.delete("/Client/c"))


async def test_the_stored_secret_is_a_salted_scrypt_hash(root: httpx.AsyncClient, settings: Settings) -> None:
    await root.put("/Client/h1", json=CLIENT)
    await root.put("/Client/h2", json=CLIENT)
    first = await stored_client_bodies(settings, "h1")
    second = await stored_client_bodies(settings, "h2")
    assert first and second
    for body in first + second:
        assert body["secret"].startswith("scrypt$")
        assert "plain-secret-value" not in orjson.dumps(body).decode()
    assert first[0]["secret"] != second[0]["secret"]  # salted


async def test_a_write_without_secret_keeps_the_old_one(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await root.put("/Client/keep", json=CLIENT)
    await root.put("/Client/keep", json={"grant_types": ["basic"], "description": "renamed"})
    await root.patch("/Client/keep", json={"description": "patched"}, headers=MERGE)
    response = await client.get("/Client/keep", headers=basic("keep", "plain-secret-value"))
    assert response.status_code == 403  # authenticated (no policy allows it yet)


async def test_a_changed_secret_is_effective_on_the_very_next_request(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await root.put("/Client/rot", json=CLIENT)
    old = basic("rot", "plain-secret-value")
    assert (await client.get("/Patient", headers=old)).status_code == 403  # verified and cached
    await root.put("/Client/rot", json={"secret": "new-secret", "grant_types": ["basic"]})
    assert (await client.get("/Patient", headers=old)).status_code == 401
    assert (await client.get("/Patient", headers=basic("rot", "new-secret"))).status_code == 403


async def test_a_secret_changed_by_patch_is_effective_at_once(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await root.put("/Client/pat", json=CLIENT)
    assert (await client.get("/Patient", headers=basic("pat", "plain-secret-value"))).status_code == 403
    await root.patch("/Client/pat", json={"secret": "patched-secret"}, headers=MERGE)
    assert (await client.get("/Patient", headers=basic("pat", "plain-secret-value"))).status_code == 401
    assert (await client.get("/Patient", headers=basic("pat", "patched-secret"))).status_code == 403


async def test_searching_or_sorting_on_secret_is_refused(root: httpx.AsyncClient) -> None:
    await root.put("/Client/s", json=CLIENT)
    for params in ({"secret": "plain-secret-value"}, {"secret.x": "1"}, {"_sort": "secret"}):
        response = await root.get("/Client", params=params)
        assert response.status_code == 400, params


async def test_a_secret_that_is_not_a_string_is_422(root: httpx.AsyncClient) -> None:
    for secret in (123, "", ["x"], {"a": 1}):
        response = await root.put("/Client/bad", json={"secret": secret, "grant_types": ["basic"]})
        assert response.status_code == 422, secret


async def test_concurrent_patches_of_a_client_are_all_kept(root: httpx.AsyncClient) -> None:
    await root.put("/Client/many", json={**CLIENT, "tags": []})
    ops = [[{"op": "add", "path": "/tags/-", "value": n}] for n in range(10)]
    headers = {"Content-Type": "application/json-patch+json"}
    statuses = await asyncio.gather(*(root.patch("/Client/many", json=op, headers=headers) for op in ops))
    assert [s.status_code for s in statuses] == [200] * 10
    assert sorted((await root.get("/Client/many")).json()["tags"]) == list(range(10))


def test_hash_is_salted_and_verifies_only_the_secret() -> None:
    first, second = hash_secret("s"), hash_secret("s")
    assert first != second
    assert is_secret_hash(first)
    assert verify_secret("s", first) and verify_secret("s", second)
    assert not verify_secret("t", first)
    assert not verify_secret("s", "not-a-hash")
    assert not verify_secret("s", "scrypt$x$y$z$w$v")


async def test_verifier_caches_a_success_only_for_the_same_client_version() -> None:
    verifier = SecretVerifier()
    hashed = hash_secret("pw")
    assert await verifier.verify("c", "pw", hashed, 1)
    assert await verifier.verify("c", "pw", hashed, 1)
    other = hash_secret("other")
    assert not await verifier.verify("c", "pw", other, 2)  # a new version is checked against its hash
    assert not await verifier.verify("c", "wrong", hashed, 1)
    assert not await verifier.verify("nobody", "pw", None, 0)


async def test_a_form_encoded_secret_verified_once_is_not_hashed_again(
    root: httpx.AsyncClient, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both readings of a Basic header are tried; a reading verified before costs no hash."""
    secret = "Ab+/cd=="
    body = {"secret": secret, "grant_types": ["basic"]}
    assert (await root.put("/Client/form-encoder", json=body)).status_code == 201
    header = base64.b64encode(f"form-encoder:{quote_plus(secret)}".encode()).decode()
    assert (await client.get("/Patient", headers={"Authorization": f"Basic {header}"})).status_code == 403
    hashed: list[str] = []
    real_verify = secrets_module.verify_secret

    def counting(candidate: str, stored: str) -> bool:
        hashed.append(candidate)
        return real_verify(candidate, stored)

    monkeypatch.setattr(secrets_module, "verify_secret", counting)
    for _ in range(3):
        response = await client.get("/Patient", headers={"Authorization": f"Basic {header}"})
        assert response.status_code == 403  # authenticated, no policy
    assert hashed == []


async def test_a_burst_of_one_credential_on_a_cold_cache_costs_one_hash_and_no_503(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pool of one thread and no queue: before, all but one of 20 concurrent requests were refused."""
    hashed: list[str] = []
    real_verify = secrets_module.verify_secret

    def counting(candidate: str, stored: str) -> bool:
        hashed.append(candidate)
        return real_verify(candidate, stored)

    monkeypatch.setattr(secrets_module, "verify_secret", counting)
    verifier = SecretVerifier(concurrency=1, queue=0)
    stored = hash_secret("pw")
    results = await asyncio.gather(*(verifier.verify("c", "pw", stored, 1) for _ in range(20)))
    assert results == [True] * 20 and len(hashed) == 1
    # A wrong secret is hashed once for its burst too, and still fails for every caller.
    wrong = await asyncio.gather(*(verifier.verify("c", "nope", stored, 1) for _ in range(5)))
    assert wrong == [False] * 5 and len(hashed) == 2
    # Another version of the client is a different credential: hashed again.
    assert await verifier.verify("c", "pw", stored, 2) and len(hashed) == 3
