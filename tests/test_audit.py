"""The audit trail: every event type recorded with its fields, searchable, read-only over REST, never
holding a secret, purged after FHIRBOX_AUDIT_RETENTION; FHIRBOX_AUDIT selects what is recorded."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from fhirbox.app import App
from fhirbox.audit import AuditPurge
from fhirbox.oauth.token_formats import token_hash
from fhirbox.settings import Settings
from tests.oauth.support import SECRET, bearer, client_body, form_basic, put_client
from tests.support import ROOT, ROOT_SECRET, MovableClock, from_address, started_app


async def events(http: httpx.AsyncClient, **params: str) -> list[dict[str, Any]]:
    response = await http.get("/AuditEvent", params={"_count": "1000", **params}, auth=ROOT)
    assert response.status_code == 200, response.text
    return [entry["resource"] for entry in response.json()["entry"]]


async def one(http: httpx.AsyncClient, code: str, **params: str) -> dict[str, Any]:
    found = await events(http, **{"type.code": code, **params})
    assert len(found) == 1, found
    return found[0]


def details(event: dict[str, Any]) -> dict[str, str]:
    return {d["type"]: d["valueString"] for d in event["entity"][0].get("detail", [])}


async def token(http: httpx.AsyncClient, client_id: str, **params: str) -> httpx.Response:
    return await http.post(
        "/auth/token",
        data={"grant_type": "client_credentials", **params},
        headers=form_basic(client_id, SECRET),
    )


async def test_token_issued_records_grant_format_scope_audience_and_session(
    client: httpx.AsyncClient,
) -> None:
    await put_client(
        client, "app", client_body(audience=["https://api.example.com/"]) | {"scope": ["read", "write"]}
    )
    response = await token(client, "app", scope="read", audience="https://api.example.com/")
    assert response.status_code == 200, response.text
    event = await one(client, "token-issued", **{"agent.who.reference": "Client/app"})
    assert event["action"] == "C" and event["outcome"] == "0"
    assert event["agent"][0]["network"]["address"] == "127.0.0.1"
    assert event["source"]["observer"]["display"] == "http://testserver"
    assert event["entity"][0]["what"]["reference"].startswith("Session/")
    assert details(event) == {
        "grant": "client_credentials",
        "format": "opaque",
        "scope": "read",
        "audience": "https://api.example.com/",
    }
    session_id = event["entity"][0]["what"]["reference"].split("/")[1]
    assert (await client.get(f"/Session/{session_id}", auth=ROOT)).status_code == 200


async def test_refresh_and_reuse_are_recorded_with_the_revoked_session(client: httpx.AsyncClient) -> None:
    await put_client(client, "app", client_body(refresh_token=True))
    first = (await token(client, "app")).json()
    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        headers=form_basic("app", SECRET),
    )
    assert refreshed.status_code == 200
    event = await one(client, "token-refreshed")
    assert event["action"] == "U" and details(event)["grant"] == "refresh_token"
    assert event["entity"][0]["what"]["reference"].startswith("Session/")


async def test_refresh_token_reuse_records_the_session_it_revoked(
    client: httpx.AsyncClient, clock: MovableClock
) -> None:
    await put_client(client, "app", client_body(refresh_token=True))
    first = (await token(client, "app")).json()
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    assert (await client.post("/auth/token", data=form, headers=form_basic("app", SECRET))).status_code == 200
    clock.advance(Settings().refresh_reuse_grace + 1)
    reused = await client.post("/auth/token", data=form, headers=form_basic("app", SECRET))
    assert reused.status_code == 400
    event = await one(client, "refresh-token-reused")
    assert event["outcome"] == "8"
    assert event["agent"][0]["who"]["reference"] == "Client/app"
    session = event["entity"][0]["what"]["reference"]
    closed = await one(client, "session-closed", **{"entity.what.reference": session})
    assert closed["outcomeDesc"] == "refresh token reuse"


async def test_failed_client_authentication_names_the_presented_id_method_and_reason(
    client: httpx.AsyncClient,
) -> None:
    await put_client(client, "app", client_body())
    wrong = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials"},
        headers=form_basic("app", "not-the-secret"),
    )
    assert wrong.status_code == 401
    unknown = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "client_id": "nobody", "client_secret": "guess"},
    )
    assert unknown.json()["error"] == "invalid_client"
    failed = await events(client, **{"type.code": "client-auth-failed"})
    by_who = {event["agent"][0]["who"]["reference"]: event for event in failed}
    assert by_who["Client/app"]["outcomeDesc"] == "invalid secret (client_secret_basic)"
    assert by_who["Client/nobody"]["outcomeDesc"] == "unknown or inactive client (client_secret_post)"
    assert all(event["outcome"] == "4" for event in failed)


async def test_throttling_is_recorded_once_when_it_starts(settings: Settings) -> None:
    async with (
        started_app(settings, auth_failure_limit=3) as app,
        from_address(app, "192.0.2.7") as http,
    ):
        for _ in range(5):
            await http.post(
                "/auth/token",
                data={"grant_type": "client_credentials"},
                headers=form_basic("ghost", "guess"),
            )
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as reader:
            found = await events(reader, **{"type.code": "client-auth-throttled"})
            assert {event["agent"][0]["network"]["address"] for event in found} == {"192.0.2.7"}
            assert len(found) == 2  # the address, and the id at that address: each locked once
            assert len(await events(reader, **{"type.code": "client-auth-failed"})) == 3


async def test_session_closed_records_who_and_why(client: httpx.AsyncClient) -> None:
    await put_client(client, "app", client_body())
    issued = (await token(client, "app")).json()
    assert (await client.delete("/Session", headers=bearer(issued["access_token"]))).status_code == 200
    event = await one(client, "session-closed")
    assert event["agent"][0]["who"]["reference"] == "Client/app"
    assert event["outcomeDesc"] == "closed by DELETE /Session"

    await token(client, "app")
    sessions = (await client.get("/Session", params={"active": "true"}, auth=ROOT)).json()
    target = sessions["entry"][0]["resource"]["id"]
    assert (await client.delete(f"/Session/{target}", auth=ROOT)).status_code == 200
    by_root = await one(client, "session-closed", **{"agent.who.reference": "Client/root"})
    assert by_root["entity"][0]["what"]["reference"] == f"Session/{target}"


async def test_client_and_policy_writes_are_recorded_without_the_secret(client: httpx.AsyncClient) -> None:
    await put_client(client, "app", client_body())
    await put_client(client, "app", client_body() | {"secret": "another-secret-value"})
    assert (await client.delete("/Client/app", auth=ROOT)).status_code == 200
    codes = [e["type"]["code"] for e in await events(client, **{"entity.what.reference": "Client/app"})]
    assert codes == ["client-created", "client-updated", "client-deleted"]
    policy = {"engine": "allow", "link": [{"reference": "Client/app"}]}
    assert (await client.put("/AccessPolicy/p", json=policy, auth=ROOT)).status_code == 201
    assert (
        await client.put("/AccessPolicy/p", json=policy | {"description": "x"}, auth=ROOT)
    ).status_code == 200
    assert (await client.delete("/AccessPolicy/p", auth=ROOT)).status_code == 200
    codes = [e["type"]["code"] for e in await events(client, **{"entity.what.reference": "AccessPolicy/p"})]
    assert codes == ["access-policy-created", "access-policy-updated", "access-policy-deleted"]
    deleted = await one(client, "client-deleted")
    assert deleted["agent"][0]["who"]["reference"] == "Client/root"
    # Deleting the Client closed nothing here (it had no Session), and its secret is nowhere.
    text = orjson.dumps(await events(client)).decode()
    assert SECRET not in text and "another-secret-value" not in text


async def test_signing_key_generated_at_first_start_is_recorded(client: httpx.AsyncClient) -> None:
    event = await one(client, "signing-key-generated")
    assert event["agent"][0]["who"]["display"] == "fhirbox"
    assert set(details(event)) == {"kid", "alg"}


async def test_no_audit_event_holds_a_secret_a_token_or_a_hash(client: httpx.AsyncClient) -> None:
    await put_client(client, "app", client_body(refresh_token=True))
    issued = (await token(client, "app")).json()
    refreshed = await client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]},
        headers=form_basic("app", SECRET),
    )
    second = refreshed.json()
    await client.post(
        "/auth/revoke", data={"token": second["access_token"]}, headers=form_basic("app", SECRET)
    )
    await token(client, "app", scope="nope")
    await client.post(
        "/auth/token", data={"grant_type": "client_credentials"}, headers=form_basic("app", "wrong-guess")
    )
    stored = await client.get("/Client/app", auth=ROOT)
    assert stored.status_code == 200
    secrets = [SECRET, ROOT_SECRET, "wrong-guess"]
    for value in (
        issued["access_token"],
        issued["refresh_token"],
        second["access_token"],
        second["refresh_token"],
    ):
        secrets += [value, token_hash(value)]
    found = await events(client)
    assert {"token-issued", "token-refreshed", "session-closed", "client-auth-failed"} <= {
        event["type"]["code"] for event in found
    }
    text = orjson.dumps(found).decode()
    for secret in secrets:
        assert secret not in text
    assert "scrypt" not in text and "$" not in text  # no stored secret hash either


async def test_audit_events_are_never_writable_over_rest(client: httpx.AsyncClient) -> None:
    existing = (await events(client))[0]
    body = {"resourceType": "AuditEvent", "type": {"code": "token-issued"}}
    assert (await client.post("/AuditEvent", json=body, auth=ROOT)).status_code == 405
    assert (await client.put(f"/AuditEvent/{existing['id']}", json=body, auth=ROOT)).status_code == 405
    patch = [{"op": "replace", "path": "/outcome", "value": "0"}]
    response = await client.patch(
        f"/AuditEvent/{existing['id']}",
        content=orjson.dumps(patch),
        headers={"Content-Type": "application/json-patch+json"},
        auth=ROOT,
    )
    assert response.status_code == 405
    assert (await client.delete(f"/AuditEvent/{existing['id']}", auth=ROOT)).status_code == 405
    assert (await client.get(f"/AuditEvent/{existing['id']}", auth=ROOT)).json() == existing


async def test_search_by_recorded_compares_instants(client: httpx.AsyncClient, clock: MovableClock) -> None:
    await put_client(client, "app", client_body())
    await token(client, "app")
    early = (await one(client, "token-issued"))["recorded"]
    clock.advance(3600)
    await token(client, "app")
    later = await events(client, **{"type.code": "token-issued", "recorded": f"gt{early}"})
    assert len(later) == 1 and later[0]["recorded"] > early
    before = await events(client, **{"type.code": "token-issued", "recorded": f"lt{later[0]['recorded']}"})
    assert [event["recorded"] for event in before] == [early]
    day = await events(client, **{"type.code": "token-issued", "recorded": early[:10]})
    assert early in {event["recorded"] for event in day}
    bad = await client.get("/AuditEvent", params={"recorded": "gtyesterday"}, auth=ROOT)
    assert bad.status_code == 400


async def test_a_client_allowed_by_policy_can_read_the_trail(client: httpx.AsyncClient) -> None:
    await put_client(client, "auditor", {"secret": SECRET, "grant_types": ["basic"]})
    denied = await client.get("/AuditEvent", auth=("auditor", SECRET))
    assert denied.status_code == 403
    policy = {
        "engine": "matcho",
        "link": [{"reference": "Client/auditor"}],
        "matcho": {"request-method": "get", "params": {"resource/type": "AuditEvent"}},
    }
    assert (await client.put("/AccessPolicy/auditor", json=policy, auth=ROOT)).status_code == 201
    allowed = await client.get(
        "/AuditEvent", params={"type.code": "client-created"}, auth=("auditor", SECRET)
    )
    assert allowed.status_code == 200, allowed.text
    assert allowed.json()["total"] >= 1


async def test_retention_purge_removes_old_events(
    app: App, client: httpx.AsyncClient, clock: MovableClock
) -> None:
    purge = AuditPurge(app.store, clock, Settings().audit_retention)
    await put_client(client, "app", client_body())
    before = len(await events(client))
    assert before >= 2  # the signing key generated at start, the Client created
    assert await purge.purge_once() == 0
    clock.advance(Settings().audit_retention + 1)
    await put_client(client, "app", client_body())  # recorded now: kept for the whole retention
    assert await purge.purge_once() == before
    assert [event["type"]["code"] for event in await events(client)] == ["client-updated"]


@pytest.mark.parametrize(
    ("level", "expected"),
    [("all", {"client-created", "token-issued"}), ("security", {"client-created"}), ("off", set())],
)
async def test_audit_setting_selects_what_is_recorded(
    settings: Settings, level: str, expected: set[str]
) -> None:
    async with started_app(settings, audit=level) as app:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            await put_client(http, "app", client_body())
            assert (await token(http, "app")).status_code == 200
            codes = {e["type"]["code"] for e in await events(http)} - {"signing-key-generated"}
            assert codes == expected
