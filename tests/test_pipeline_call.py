"""``Pipeline.call``: a request made inside the server as a principal runs the API's own checks."""

from __future__ import annotations

import httpx
import orjson

from fhirbox.app import App
from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request


def origin() -> Request:
    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "method": "GET", "path": "/ui/", "headers": [], "client": ("10.1.2.3", 5)}
    request = Request(scope, receive, max_body_bytes=1024, max_depth=10, request_id="t-1")
    request.base_url = "http://testserver"
    return request


async def principal(app: App, client_id: str) -> Principal:
    stored = await app.store.read("Client", client_id)
    assert stored is not None
    return Principal(client_id=client_id, client=stored.body, is_root=client_id == "root")


async def test_a_call_is_authorized_by_the_callers_policies(app: App, root: httpx.AsyncClient) -> None:
    await root.put("/Client/reader", json={"grant_types": ["basic"], "secret": "reader-secret-01234"})
    await root.put("/AccessPolicy/read", json={
        "engine": "matcho", "matcho": {"request-method": "get"},
        "link": [{"resourceType": "Client", "id": "reader"}],
    })  # fmt: skip
    reader, admin = await principal(app, "reader"), await principal(app, "root")
    body = orjson.dumps({"resourceType": "Patient", "id": "p1"})
    refused = await app.pipeline.call(reader, origin(), "PUT", "/Patient/p1", body=body,
                                      content_type="application/json")  # fmt: skip
    assert refused.status == 403
    assert (await root.get("/Patient/p1")).status_code == 404
    written = await app.pipeline.call(admin, origin(), "PUT", "/Patient/p1", body=body,
                                      content_type="application/json")  # fmt: skip
    assert written.status == 201
    read = await app.pipeline.call(reader, origin(), "GET", "/Patient", [("_id", "p1")])
    assert read.status == 200 and orjson.loads(read.body)["total"] == 1
    assert (await app.pipeline.call(reader, origin(), "GET", "/auth/keys")).status == 403  # root only


async def test_a_call_answers_errors_as_the_api_does_and_never_reaches_console_routes(app: App) -> None:
    admin = await principal(app, "root")
    missing = await app.pipeline.call(admin, origin(), "GET", "/Patient/nobody")
    assert missing.status == 404 and orjson.loads(missing.body)["resourceType"] == "OperationOutcome"
    assert (await app.pipeline.call(admin, origin(), "GET", "/ui/clients")).status == 403
    assert (await app.pipeline.call(None, origin(), "GET", "/Patient")).status == 403
    assert (await app.pipeline.call(None, origin(), "GET", "/health")).status == 200
