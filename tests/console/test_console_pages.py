"""What a person does with the console, over HTTP on both backends: each page acts through the API."""

from __future__ import annotations

import re
import time
from typing import Any

import httpx

from fhirbox.app import App
from fhirbox.models.session import iso
from fhirbox.storage.base import NewResource
from tests.console.support import SECRET_SHOWN, make_auditor, sign_in
from tests.console.test_console_security import console_client
from tests.support import ROOT_ID, ROOT_SECRET, basic


async def seed_audit_event(app: App, event_id: str, code: str, client_id: str, outcome: str = "0") -> None:
    """An AuditEvent as the audit trail writes them (through the store: the API may refuse writes)."""
    body: dict[str, Any] = {
        "resourceType": "AuditEvent",
        "type": {"code": code},
        "action": "E",
        "recorded": iso(time.time()),
        "outcome": outcome,
        "agent": [{"who": {"reference": f"Client/{client_id}"}, "network": {"address": "127.0.0.1"}}],
        "entity": [{"what": {"reference": f"Client/{client_id}"}}],
    }
    await app.store.add([NewResource("AuditEvent", event_id, body)])


async def svc_token(root: httpx.AsyncClient) -> str:
    """An opaque access token of a new client_credentials Client ``svc`` (its Session id before the dot)."""
    await root.put(
        "/Client/svc", json={"secret": "svc-secret-0123456789", "grant_types": ["client_credentials"]}
    )
    response = await root.post(
        "/auth/token", data={"grant_type": "client_credentials"}, auth=("svc", "svc-secret-0123456789")
    )
    return str(response.json()["access_token"])


async def test_creating_a_client_shows_a_generated_secret_once_and_it_works(
    app: App, root: httpx.AsyncClient
) -> None:
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        created = await http.post(
            "/ui/clients",
            data={
                "csrf": csrf,
                "id": "svc",
                "grant_types": ["client_credentials", "basic"],
                "token_format": "jwt",
                "access_token_expiration": "600",
                "scope": "system/Patient.rs",
                "audience": "https://api.example\n#https://.*[.]example",
            },
        )
        assert created.status_code == 200, created.text
        secret = SECRET_SHOWN.search(created.text).group(1)  # type: ignore[union-attr]
        assert len(secret) >= 43
        page = await http.get("/ui/clients/svc")
    assert secret not in page.text
    stored = (await root.get("/Client/svc")).json()
    assert "secret" not in stored
    assert stored["auth"]["client_credentials"] == {
        "token_format": "jwt",
        "access_token_expiration": 600,
        "audience": ["https://api.example", "#https://.*[.]example"],
    }
    assert stored["scope"] == ["system/Patient.rs"]
    assert (await root.get("/Client", headers=basic("svc", secret), auth=None)).status_code in (200, 403)


async def test_editing_a_client_shows_the_apis_422_and_keeps_fields_the_form_does_not_show(
    app: App, root: httpx.AsyncClient
) -> None:
    await root.put("/Client/svc", json={"secret": "s" * 20, "grant_types": ["basic"], "custom": {"a": 1}})
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        bad = await http.post(
            "/ui/clients/svc", data={"csrf": csrf, "grant_types": "basic", "access_token_expiration": "soon"}
        )
        good = await http.post(
            "/ui/clients/svc",
            data={"csrf": csrf, "grant_types": ["basic", "client_credentials"], "refresh_token": "on"},
        )
    assert bad.status_code == 422
    assert "Client.auth.client_credentials.access_token_expiration must be a positive integer" in bad.text
    assert good.status_code == 303
    stored = (await root.get("/Client/svc")).json()
    assert stored["custom"] == {"a": 1}
    assert stored["grant_types"] == ["basic", "client_credentials"]
    assert stored["auth"]["client_credentials"] == {"refresh_token": True}
    assert (await root.get("/Client", headers=basic("svc", "s" * 20), auth=None)).status_code in (200, 403)


async def test_rotating_deactivating_and_deleting_a_client(app: App, root: httpx.AsyncClient) -> None:
    await root.put(
        "/Client/svc", json={"secret": "old-secret-0123456789", "grant_types": ["client_credentials"]}
    )
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        rotated = await http.post("/ui/clients/svc/secret", data={"csrf": csrf})
        new_secret = SECRET_SHOWN.search(rotated.text).group(1)  # type: ignore[union-attr]
        token = lambda secret: root.post(  # noqa: E731
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("svc", secret)
        )
        assert (await token("old-secret-0123456789")).status_code == 401
        issued = await token(new_secret)
        assert issued.status_code == 200
        bearer = {"Authorization": f"Bearer {issued.json()['access_token']}"}
        off = await http.post("/ui/clients/svc/active", data={"csrf": csrf, "active": "false"})
        assert off.status_code == 303
        assert (await root.get("/Client/svc")).json()["active"] is False
        assert (await root.get("/Patient", headers=bearer, auth=None)).status_code == 401
        confirm = await http.get("/ui/clients/svc/delete")
        assert "Delete client svc?" in confirm.text
        deleted = await http.post("/ui/clients/svc/delete", data={"csrf": csrf})
        assert deleted.headers["location"] == "/ui/clients?deleted=svc"
    assert (await root.get("/Client/svc")).status_code == 410


async def test_the_policy_editor_marks_the_offending_line_and_saves_valid_policies(
    app: App, root: httpx.AsyncClient
) -> None:
    await root.put("/Client/svc", json={"secret": "svc-secret-0123456789", "grant_types": ["basic"]})
    text = (
        "engine: matcho\nmatcho:\n  request-method: get\n  uri: {$nope: 1}\n"
        "link:\n  - {resourceType: Client, id: svc}\n"
    )
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        bad = await http.post(
            "/ui/policies", data={"csrf": csrf, "id": "svc-read", "format": "yaml", "text": text}
        )
        as_json = await http.post(
            "/ui/policies",
            data={
                "csrf": csrf,
                "id": "svc-read",
                "format": "json",
                "text": '{"engine": "matcho",\n "matcho": 7}',
            },
        )
        good = await http.post(
            "/ui/policies",
            data={
                "csrf": csrf,
                "id": "svc-read",
                "format": "yaml",
                "text": text.replace("{$nope: 1}", "/Patient"),
            },
        )
        listed = await http.get("/ui/policies")
        tried = await http.post(
            "/ui/policies/try", data={"csrf": csrf, "method": "get", "path": "/Patient", "client": "svc"}
        )
    assert bad.status_code == 422
    assert "Invalid AccessPolicy: matcho.uri: unknown matcho operator" in bad.text
    assert re.search(r'<li value="4" class="offending"><code>  uri: \{\$nope: 1\}</code>', bad.text)
    assert as_json.status_code == 422 and '<li value="2" class="offending">' in as_json.text
    assert good.status_code == 303
    assert (await root.get("/AccessPolicy/svc-read")).json()["matcho"]["uri"] == "/Patient"
    assert '<a href="/ui/clients/svc">svc</a>' in listed.text
    assert "Allowed by" in tried.text and "svc-read" in tried.text
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        unknown = await http.post(
            "/ui/policies/try", data={"csrf": csrf, "method": "get", "path": "/Patient", "client": "ghost"}
        )
    assert unknown.status_code == 200 and "No policy applies to this client" in unknown.text


async def test_try_a_token_shows_the_response_and_the_decoded_jwt(app: App, root: httpx.AsyncClient) -> None:
    await root.put(
        "/Client/svc",
        json={
            "secret": "svc-secret-0123456789",
            "grant_types": ["client_credentials"],
            "auth": {"client_credentials": {"token_format": "jwt"}},
        },
    )
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        good = await http.post(
            "/ui/token", data={"csrf": csrf, "client_id": "svc", "client_secret": "svc-secret-0123456789"}
        )
        bad = await http.post("/ui/token", data={"csrf": csrf, "client_id": "svc", "client_secret": "nope"})
    assert "Response: 200" in good.text
    assert "at+jwt" in good.text and "&#34;client_id&#34;: &#34;svc&#34;" in good.text.replace('"', "&#34;")
    assert "Response: 400" in bad.text and "invalid_client" in bad.text


async def test_closing_a_session_in_the_console_stops_its_token(app: App, root: httpx.AsyncClient) -> None:
    token = await svc_token(root)
    session_id = token.split(".")[0]
    bearer = {"Authorization": f"Bearer {token}"}
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        listed = await http.get("/ui/sessions", params={"client": "svc"})
        assert session_id in listed.text
        closed = await http.post(
            f"/ui/sessions/{session_id}/close", data={"csrf": csrf, "back": "//evil.example"}
        )
    assert closed.headers["location"] == "/ui/sessions?closed=1"
    assert (await root.get("/Patient", headers=bearer, auth=None)).status_code == 401


async def test_closing_all_of_a_clients_sessions(app: App, root: httpx.AsyncClient) -> None:
    await root.put(
        "/Client/svc", json={"secret": "svc-secret-0123456789", "grant_types": ["client_credentials"]}
    )
    for _ in range(3):
        await root.post(
            "/auth/token", data={"grant_type": "client_credentials"}, auth=("svc", "svc-secret-0123456789")
        )
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        closed = await http.post("/ui/sessions/close-all", data={"csrf": csrf, "client": "svc"})
    assert closed.headers["location"] == "/ui/sessions?client=svc&state=closed&closed=3"
    still_open = (await root.get("/Session", params={"client.id": "svc", "active": "true"})).json()
    assert still_open["total"] == 0


async def test_the_audit_pages_filter_and_show_one_event(app: App, root: httpx.AsyncClient) -> None:
    await seed_audit_event(app, "e1", "token-issued", "svc")
    await seed_audit_event(app, "e2", "client-auth-failed", "intruder", outcome="4")
    await make_auditor(root)
    async with console_client(app) as http:
        await sign_in(http, "auditor", "auditor-secret-0123456789")
        failed = await http.get("/ui/audit", params={"outcome": "4"})
        by_client = await http.get("/ui/audit", params={"client": "svc"})
        one = await http.get("/ui/audit/e2")
        bad_time = await http.get("/ui/audit", params={"from": "yesterday"})
        future = await http.get("/ui/audit", params={"from": "2999-01-01T00:00"})
        dashboard = await http.get("/ui/")
    assert "/ui/audit/e2" in failed.text and "/ui/audit/e1" not in failed.text
    assert "/ui/audit/e1" in by_client.text and "/ui/audit/e2" not in by_client.text
    assert one.status_code == 200 and "Client/intruder" in one.text
    assert "from: not a date-time" in bad_time.text
    assert "No events match." in future.text
    tiles = re.findall(
        r'<span class="value">([^<]*)</span><span class="label">([^<]*)</span>', dashboard.text
    )
    assert ("1", "Tokens issued, last hour") in tiles
    assert ("1", "Failed authentications, last day") in tiles
    assert ("—", "Clients") in tiles  # the auditor may not read Clients
    assert dashboard.text.count('class="bar"') == 60


async def test_keys_page_lists_and_rotates_the_signing_keys(app: App, root: httpx.AsyncClient) -> None:
    before = (await root.get("/auth/keys")).json()["keys"]
    assert [k["status"] for k in before] == ["signing"]
    assert "private_pem" not in str(before)
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        assert before[0]["kid"] in (await http.get("/ui/keys")).text
        rotated = await http.post("/ui/keys/rotate", data={"csrf": csrf})
        new_kid = rotated.headers["location"].split("=", 1)[1]
    after = {k["kid"]: k["status"] for k in (await root.get("/auth/keys")).json()["keys"]}
    assert after == {new_kid: "signing", before[0]["kid"]: "retired"}
    jwks = (await root.get("/.well-known/jwks.json")).json()
    assert {k["kid"] for k in jwks["keys"]} == {new_kid, before[0]["kid"]}


async def test_key_routes_are_root_only(app: App, root: httpx.AsyncClient) -> None:
    await root.put("/Client/svc", json={"secret": "svc-secret-0123456789", "grant_types": ["basic"]})
    await root.put(
        "/AccessPolicy/all", json={"engine": "allow", "link": [{"resourceType": "Client", "id": "svc"}]}
    )
    headers = basic("svc", "svc-secret-0123456789")
    assert (await root.get("/auth/keys", headers=headers, auth=None)).status_code == 403
    assert (await root.post("/auth/keys/rotate", headers=headers, auth=None)).status_code == 403


async def test_the_dashboard_counts_a_day_from_its_completed_hours_and_its_ends(
    app: App, root: httpx.AsyncClient, clock: Any
) -> None:
    for n in range(3):
        await seed_audit_event(app, f"t{n}", "token-issued", "svc")
    await seed_audit_event(app, "f0", "client-auth-failed", "svc", outcome="4")

    def tiles(html: str) -> dict[str, str]:
        found = re.findall(r'<span class="value">([^<]*)</span><span class="label">([^<]*)</span>', html)
        return {label: value for value, label in found}

    async with console_client(app) as http:
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        now = tiles((await http.get("/ui/")).text)
        clock.advance(3 * 3600)  # the events' hour is complete now, and counted once
        await sign_in(http, ROOT_ID, ROOT_SECRET)  # the console session timed out meanwhile
        later = [tiles((await http.get("/ui/")).text) for _ in range(2)]
        clock.advance(86400)
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        gone = tiles((await http.get("/ui/")).text)
    assert now["Tokens issued, last hour"] == now["Tokens issued, last day"] == "3"
    for seen in later:
        assert seen["Tokens issued, last hour"] == "0" and seen["Tokens issued, last day"] == "3"
        assert seen["Failed authentications, last day"] == "1"
    assert gone["Tokens issued, last day"] == "0"


async def test_a_page_number_too_long_for_an_int_is_the_first_page_not_a_500(app: App) -> None:
    async with console_client(app) as http:
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        for path in ("/ui/clients", "/ui/audit", "/ui/sessions", "/ui/policies"):
            answer = await http.get(path, params={"page": "9" * 5000})
            assert answer.status_code == 200, (path, answer.text[:300])


async def test_an_audit_range_beyond_the_calendar_in_utc_is_a_problem_shown_not_a_500(app: App) -> None:
    async with console_client(app) as http:
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        for name, value in (("from", "0001-01-01T00:00+05:00"), ("to", "9999-12-31T23:59-05:00")):
            answer = await http.get("/ui/audit", params={name: value})
            assert answer.status_code == 200, answer.text[:300]
            assert "not a date-time" in answer.text


async def test_form_values_no_header_or_integer_can_hold_are_refused_not_a_500(
    app: App, root: httpx.AsyncClient
) -> None:
    """A signed-in user (or a page tampered with) posting what no header can carry or no JSON integer
    can hold gets an answer: the default page to go back to, the API's 422, a stale-ETag refusal, a
    policy error without a line number. Never a 500, never a dropped connection."""
    token = await svc_token(root)
    session_id = token.split(".")[0]
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        for back in ("/ui/\u2028", "/ui/x\r\nX-Injected: 1"):
            closed = await http.post(f"/ui/sessions/{session_id}/close", data={"csrf": csrf, "back": back})
            assert closed.status_code == 303
            assert closed.headers["location"] == "/ui/sessions?closed=1"
        huge = "9" * 30
        created = await http.post(
            "/ui/clients",
            data={
                "csrf": csrf,
                "id": "big",
                "grant_types": "client_credentials",
                "access_token_expiration": huge,
            },
        )
        assert created.status_code == 422
        assert "access_token_expiration" in created.text
        stale = await http.post(
            "/ui/clients/svc", data={"csrf": csrf, "grant_types": "client_credentials", "etag": 'W/"\u2028"'}
        )
        assert stale.status_code in (409, 412), stale.text
        engine = "line " + "1" * 5000
        policy = await http.post(
            "/ui/policies",
            data={"csrf": csrf, "id": "odd", "format": "yaml", "text": f"engine: '{engine}'\n"},
        )
        assert policy.status_code == 422
