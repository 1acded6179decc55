"""Request ids: a well-formed incoming X-Request-Id is kept, any other replaced; every response
carries one; it names the request in log lines and in a 500 OperationOutcome."""

from __future__ import annotations

import json
import logging
import re

import httpx
import pytest

from fhirbox.app import App
from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route
from fhirbox.logs import JsonFormatter, RequestIdFilter
from tests.support import ROOT

GENERATED = re.compile(r"[0-9a-f]+-\d+")


@pytest.mark.parametrize("incoming", ["abc", "A.b_c-9", "x" * 128, "0"])
async def test_a_well_formed_request_id_is_kept(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/health", headers={"X-Request-Id": incoming})
    assert response.headers["x-request-id"] == incoming


@pytest.mark.parametrize(
    "incoming",
    ["", "x" * 129, "has space", "semi;colon", "slash/id", "ünïcode", "new\\nline", "a,b"],
)
async def test_any_other_request_id_is_replaced(client: httpx.AsyncClient, incoming: str) -> None:
    response = await client.get("/health", headers={"X-Request-Id": incoming.encode("utf-8")})
    assert response.headers["x-request-id"] != incoming
    assert GENERATED.fullmatch(response.headers["x-request-id"])


async def test_two_request_id_headers_are_replaced(client: httpx.AsyncClient) -> None:
    response = await client.get("/health", headers=[("X-Request-Id", "one"), ("X-Request-Id", "two")])
    assert GENERATED.fullmatch(response.headers["x-request-id"])


async def test_requests_without_an_id_get_distinct_ones(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/health")).headers["x-request-id"] for _ in range(5)}
    assert len(ids) == 5


@pytest.mark.parametrize(
    ("method", "path", "status", "auth"),
    [
        ("GET", "/no/such/route/at/all", 404, None),
        ("GET", "/auth/token", 405, None),
        ("GET", "/Patient", 401, None),
        ("GET", "/Patient/missing", 404, ROOT),
        ("POST", "/auth/token", 400, None),
    ],
)
async def test_error_responses_carry_the_request_id(
    client: httpx.AsyncClient, method: str, path: str, status: int, auth: tuple[str, str] | None
) -> None:
    response = await client.request(method, path, headers={"X-Request-Id": "err-1"}, auth=auth)
    assert response.status_code == status
    assert response.headers["x-request-id"] == "err-1"


async def test_a_too_large_body_is_answered_with_the_request_id(app: App, client: httpx.AsyncClient) -> None:
    big = b"{" + b" " * (app.settings.max_body_bytes + 1) + b"}"
    response = await client.post(
        "/Patient",
        content=big,
        headers={"X-Request-Id": "big-1", "Content-Type": "application/json"},
        auth=ROOT,
    )
    assert response.status_code == 413
    assert response.headers["x-request-id"] == "big-1"


async def test_a_500_names_its_request_id_in_the_outcome_the_header_and_the_log(
    app: App, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(request: Request, principal: Principal | None) -> Response:
        logging.getLogger("fhirbox.test").warning("about to fail")
        raise RuntimeError("a bug")

    app.router.add("GET", "/broken", Route(broken, "public"))
    caplog.handler.addFilter(RequestIdFilter())
    with caplog.at_level(logging.WARNING):
        response = await client.get("/broken", headers={"X-Request-Id": "boom-42"})
    assert response.status_code == 500
    assert response.headers["x-request-id"] == "boom-42"
    assert "boom-42" in response.json()["issue"][0]["diagnostics"]
    lines = [json.loads(JsonFormatter().format(record)) for record in caplog.records]
    about = [line for line in lines if line["logger"] in ("fhirbox.test", "fhirbox.request")]
    assert [line["message"] for line in about] == ["about to fail", "internal error in request GET /broken"]
    assert all(line["request_id"] == "boom-42" for line in about)
    assert "RuntimeError: a bug" in about[1]["exception"]
