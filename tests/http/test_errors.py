"""Every error status answers an OperationOutcome whose id is the issue code; never a stack trace."""

from __future__ import annotations

import logging

import httpx
import pytest

from fhirbox.app import App
from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route
from fhirbox.logs import RequestIdFilter
from fhirbox.storage.base import UnstorableValue
from tests.support import basic


def assert_outcome(response: httpx.Response, status: int, code: str) -> dict[str, object]:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert body["id"] == code
    issue = body["issue"][0]
    assert issue["code"] == code
    assert issue["severity"] in ("fatal", "error")
    assert issue["diagnostics"]
    assert "Traceback" not in response.text
    return dict(body)


async def test_400_malformed(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/x", content=b"{", headers={"Content-Type": "application/json"})
    assert_outcome(response, 400, "invalid")


async def test_401_without_credentials(client: httpx.AsyncClient) -> None:
    response = await client.get("/Patient/x")
    assert_outcome(response, 401, "login")
    assert response.headers["www-authenticate"]


async def test_403_for_an_authenticated_client_that_is_not_root(
    root: httpx.AsyncClient, client: httpx.AsyncClient
) -> None:
    await root.put("/Client/worker", json={"secret": "s3cret", "grant_types": ["basic"]})
    response = await client.get("/Patient", headers=basic("worker", "s3cret"))
    assert_outcome(response, 403, "forbidden")


async def test_404_unknown_resource_and_unknown_route(root: httpx.AsyncClient) -> None:
    assert_outcome(await root.get("/Patient/none"), 404, "not-found")
    assert_outcome(await root.get("/Patient/x/_history/1/more"), 404, "not-found")
    assert_outcome(await root.get("/"), 404, "not-found")


async def test_405_names_the_allowed_methods(root: httpx.AsyncClient) -> None:
    response = await root.post("/Patient/x", json={})
    assert_outcome(response, 405, "not-supported")
    assert set(response.headers["allow"].split(", ")) == {"GET", "PUT", "PATCH", "DELETE"}
    response = await root.delete("/Patient")
    assert_outcome(response, 405, "not-supported")
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


async def test_405_on_the_token_endpoint_with_the_wrong_method(client: httpx.AsyncClient) -> None:
    response = await client.get("/auth/token")
    assert_outcome(response, 405, "not-supported")
    assert response.headers["allow"] == "POST"


async def test_literal_session_route_leaves_session_search_to_the_resource_api(
    root: httpx.AsyncClient,
) -> None:
    response = await root.get("/Session")
    assert response.status_code == 200
    assert response.json()["type"] == "searchset"


async def test_409_conflict(root: httpx.AsyncClient) -> None:
    await root.post("/Patient", json={"id": "c"})
    assert_outcome(await root.post("/Patient", json={"id": "c"}), 409, "conflict")


async def test_410_deleted(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/d", json={})
    await root.delete("/Patient/d")
    assert_outcome(await root.get("/Patient/d"), 410, "deleted")


async def test_412_precondition_failed(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/p", json={})
    response = await root.put("/Patient/p", json={}, headers={"If-Match": 'W/"0"'})
    assert_outcome(response, 412, "conflict")


async def test_413_too_large(root: httpx.AsyncClient) -> None:
    big = b"[" + b"1," * (600 * 1024) + b"1]"
    response = await root.post("/Patient", content=big, headers={"Content-Type": "application/json"})
    assert_outcome(response, 413, "too-costly")


async def test_415_unsupported_media_type(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/x", content=b"<x/>", headers={"Content-Type": "application/xml"})
    assert_outcome(response, 415, "not-supported")


async def test_422_invalid_resource(root: httpx.AsyncClient) -> None:
    assert_outcome(await root.put("/Patient/x", json={"resourceType": "Other"}), 422, "invalid")
    assert_outcome(await root.put("/Patient/bad_id", json={}), 422, "invalid")


async def test_internal_error_is_a_500_outcome_with_the_request_id_in_the_log(
    app: App, root: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request, principal: Principal | None) -> Response:
        raise RuntimeError("secret internal detail")

    app.router.add("GET", "/_test/broken", Route(broken))
    caplog.handler.addFilter(RequestIdFilter())  # as `fhirbox serve` configures every handler
    with caplog.at_level(logging.ERROR, logger="fhirbox.request"):
        response = await root.get("/_test/broken")
    body = assert_outcome(response, 500, "exception")
    request_id = response.headers["x-request-id"]
    assert request_id in str(body["issue"])
    assert "secret internal detail" not in response.text
    assert "RuntimeError" not in response.text
    logged = [record for record in caplog.records if getattr(record, "request_id", None) == request_id]
    assert logged and logged[0].exc_info is not None


async def test_internal_errors_render_in_yaml_when_asked(app: App, root: httpx.AsyncClient) -> None:
    async def broken(request: Request, principal: Principal | None) -> Response:
        raise ValueError("boom")

    app.router.add("GET", "/_test/broken", Route(broken))
    response = await root.get("/_test/broken", headers={"Accept": "text/yaml"})
    assert response.status_code == 500
    assert response.headers["content-type"].startswith("text/yaml")
    assert "id: exception" in response.text


async def test_a_value_the_store_cannot_hold_is_a_422_outcome(app: App, root: httpx.AsyncClient) -> None:
    async def unstorable(request: Request, principal: Principal | None) -> Response:
        raise UnstorableValue("PostgreSQL cannot store the character U+0000")

    app.router.add("PUT", "/_test/unstorable", Route(unstorable))
    body = assert_outcome(await root.put("/_test/unstorable", json={}), 422, "invalid")
    assert "U+0000" in body["issue"][0]["diagnostics"]
