"""The root client and HTTP Basic authentication of Clients on ordinary API calls."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest

from tests.support import ROOT_ID, ROOT_SECRET, ServerProcess, basic


async def test_root_with_the_configured_secret_may_do_everything(client: httpx.AsyncClient) -> None:
    headers = basic(ROOT_ID, ROOT_SECRET)
    assert (await client.put("/Patient/r", json={}, headers=headers)).status_code == 201
    assert (await client.get("/Patient/r", headers=headers)).status_code == 200
    assert (await client.get("/Client/root", headers=headers)).status_code == 200


@pytest.mark.parametrize(
    "authorization",
    [
        "Basic " + basic(ROOT_ID, "wrong")["Authorization"].split()[1],
        "Basic " + basic("nobody", ROOT_SECRET)["Authorization"].split()[1],
        "Basic !!!not-base64!!!",
        "Basic " + "bm9jb2xvbg==",  # "nocolon"
        "Basic ",
        "Basic",
        "Digest username=root",
        "garbage",
    ],
)
async def test_bad_credentials_are_401_with_a_challenge(
    client: httpx.AsyncClient, authorization: str
) -> None:
    response = await client.get("/Patient", headers={"Authorization": authorization})
    assert response.status_code == 401
    assert response.json()["id"] == "login"
    assert "Basic" in response.headers["www-authenticate"]


async def test_the_api_is_closed_without_credentials(client: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/Patient"), ("PUT", "/Patient/x"), ("DELETE", "/Client/root")):
        response = await client.request(method, path, json={})
        assert response.status_code == 401, (method, path)
        assert response.headers["www-authenticate"]


async def test_health_and_ready_are_open(client: httpx.AsyncClient) -> None:
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/ready")).status_code == 200


async def test_a_client_with_basic_grant_authenticates_and_is_forbidden_without_a_policy(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await root.put("/Client/worker", json={"secret": "w-secret", "grant_types": ["basic"]})
    response = await client.get("/Patient", headers=basic("worker", "w-secret"))
    assert response.status_code == 403
    assert response.json()["id"] == "forbidden"
    policy = {"engine": "allow", "link": [{"id": "worker", "resourceType": "Client"}]}
    assert (await root.put("/AccessPolicy/worker", json=policy)).status_code in (200, 201)
    assert (await client.get("/Patient", headers=basic("worker", "w-secret"))).status_code == 200


async def test_a_client_without_basic_grant_is_401(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await root.put("/Client/cc", json={"secret": "c-secret", "grant_types": ["client_credentials"]})
    response = await client.get("/Patient", headers=basic("cc", "c-secret"))
    assert response.status_code == 401
    assert "basic" in response.json()["issue"][0]["diagnostics"]


async def test_an_inactive_client_is_401(root: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    await root.put("/Client/off", json={"secret": "o-secret", "grant_types": ["basic"]})
    assert (await client.get("/Patient", headers=basic("off", "o-secret"))).status_code == 403
    await root.patch(
        "/Client/off", json={"active": False}, headers={"Content-Type": "application/merge-patch+json"}
    )
    assert (await client.get("/Patient", headers=basic("off", "o-secret"))).status_code == 401


async def test_a_deleted_client_is_401(root: httpx.AsyncClient, client: httpx.AsyncClient) -> None:
    await root.put("/Client/gone", json={"secret": "g-secret", "grant_types": ["basic"]})
    assert (await client.get("/Patient", headers=basic("gone", "g-secret"))).status_code == 403
    await root.delete("/Client/gone")
    assert (await client.get("/Patient", headers=basic("gone", "g-secret"))).status_code == 401


def test_changing_the_root_secret_between_restarts_changes_it(
    server_factory: Callable[..., ServerProcess],
) -> None:
    first = server_factory(env={"FHIRBOX_ROOT_CLIENT_SECRET": "first-secret"})
    with first.client() as http:
        assert http.get("/Patient", auth=(ROOT_ID, "first-secret")).status_code == 200
    first.stop()
    second = server_factory(env={"FHIRBOX_ROOT_CLIENT_SECRET": "second-secret"})
    with second.client() as http:
        assert http.get("/Patient", auth=(ROOT_ID, "second-secret")).status_code == 200
        assert http.get("/Patient", auth=(ROOT_ID, "first-secret")).status_code == 401


def test_first_start_without_a_secret_prints_a_generated_one_once(
    server_factory: Callable[..., ServerProcess],
) -> None:
    first = server_factory(env={"FHIRBOX_ROOT_CLIENT_SECRET": ""})
    printed = [line for line in first.output().splitlines() if "Generated the root client's secret" in line]
    assert len(printed) == 1
    # A log line (FHIRBOX_LOG_FORMAT) whose message names the id and the generated (URL-safe) secret.
    found = re.search(rf"{ROOT_ID}:([A-Za-z0-9_-]+)", printed[0])
    assert found is not None
    secret = found.group(1)
    with first.client() as http:
        assert http.get("/Patient", auth=(ROOT_ID, secret)).status_code == 200
    first.stop()
    second = server_factory(env={"FHIRBOX_ROOT_CLIENT_SECRET": ""})
    assert "Generated the root client's secret" not in second.output()
    assert secret not in second.output()
    with second.client() as http:
        assert http.get("/Patient", auth=(ROOT_ID, secret)).status_code == 200
