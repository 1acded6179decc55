"""The console's security points over HTTP, on both backends: cookie, CSRF, headers, escaping, idle
timeout, throttled sign-in, policy-limited clients, and the separation of cookies and tokens."""

from __future__ import annotations

import dataclasses

import httpx

from fhirbox.app import App
from fhirbox.settings import Settings
from tests.console.support import AUDITOR, make_auditor, sign_in
from tests.support import ROOT, ROOT_ID, ROOT_SECRET, MovableClock, started_app

SECURITY_HEADERS = {
    "content-security-policy": "default-src 'self'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def console_client(app: App, base_url: str = "http://testserver") -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=base_url)


async def test_sign_in_cookie_is_httponly_strict_and_scoped_to_ui(app: App) -> None:
    async with console_client(app) as http:
        answer = await http.post("/ui/sign-in", data={"client_id": ROOT_ID, "client_secret": ROOT_SECRET})
    assert answer.status_code == 303
    cookie = answer.headers["set-cookie"]
    parts = [part.strip() for part in cookie.split(";")]
    assert parts[0].startswith("fhirbox_console=")
    assert {"Path=/ui", "HttpOnly", "SameSite=Strict"} <= set(parts)
    assert "Secure" not in parts  # plain http


async def test_cookie_is_secure_when_the_console_is_reached_over_https(settings: Settings) -> None:
    async with started_app(settings, base_url="https://console.example") as app:
        async with console_client(app, "https://console.example") as http:
            answer = await http.post("/ui/sign-in", data={"client_id": ROOT_ID, "client_secret": ROOT_SECRET})
    assert answer.status_code == 303
    assert "Secure" in [part.strip() for part in answer.headers["set-cookie"].split(";")]


async def test_every_console_response_carries_the_security_headers(app: App) -> None:
    async with console_client(app) as http:
        answers = [
            await http.get("/ui/"),  # redirect to sign-in
            await http.get("/ui/sign-in"),
            await http.get("/ui/static/console.css"),
            await http.post("/ui/sign-in", data={"client_id": ROOT_ID, "client_secret": "wrong"}),
        ]
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        answers += [
            await http.get("/ui/"),
            await http.get("/ui/clients"),
            await http.get("/ui/nowhere"),  # 404 page
            await http.post("/ui/clients", data={"id": "x"}),  # 403: no CSRF token
            await http.post("/ui/sign-out", data={"csrf": csrf}),
        ]
    for answer in answers:
        for name, value in SECURITY_HEADERS.items():
            assert answer.headers.get(name) == value, (answer.request.url, name, answer.headers)
    assert "<script" not in answers[5].text and "style=" not in answers[5].text


async def test_a_post_without_the_sessions_csrf_token_is_403_and_changes_nothing(
    app: App, root: httpx.AsyncClient
) -> None:
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        missing = await http.post("/ui/clients", data={"id": "forged", "grant_types": "basic"})
        wrong = await http.post("/ui/clients", data={"id": "forged", "csrf": "0" * 64})
        assert missing.status_code == wrong.status_code == 403
        assert "did not come from this console" in missing.text
        assert (await root.get("/Client/forged")).status_code == 404
        # Another session's token is not this one's.
        async with console_client(app) as other:
            other_csrf = await sign_in(other, ROOT_ID, ROOT_SECRET)
        assert other_csrf != csrf
        assert (await http.post("/ui/clients", data={"id": "forged", "csrf": other_csrf})).status_code == 403
        made = await http.post("/ui/clients", data={"id": "made", "csrf": csrf, "grant_types": "basic"})
        assert made.status_code == 200, made.text
    assert (await root.get("/Client/made")).status_code == 200


async def test_user_supplied_text_is_shown_escaped(app: App, root: httpx.AsyncClient) -> None:
    script = "<script>alert(1)</script>"
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        as_id = await http.post("/ui/clients", data={"id": script, "csrf": csrf})
        as_path = await http.get("/ui/clients/" + script)
        as_policy = await http.post(
            "/ui/policies",
            data={
                "csrf": csrf,
                "id": "p-script",
                "format": "yaml",
                "text": f"engine: matcho\nmatcho: {{uri: '{script}'}}\ndescription: '{script}'\n",
            },
        )
        assert as_policy.status_code == 303, as_policy.text
        shown = await http.get("/ui/policies/p-script")
        broken = await http.post(
            "/ui/policies",
            data={"csrf": csrf, "id": "p-bad", "format": "yaml", "text": f"engine: {script}\n"},
        )
    assert as_id.status_code == 422
    assert as_path.status_code == 404
    assert broken.status_code == 422
    for page in (as_id, as_path, shown, broken):
        assert script not in page.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_an_idle_console_session_is_closed_after_the_timeout(
    app: App, root: httpx.AsyncClient, clock: MovableClock, settings: Settings
) -> None:
    async with console_client(app) as http:
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        clock.advance(settings.console_idle_timeout - 120)
        assert (await http.get("/ui/")).status_code == 200  # used: the timeout starts again
        clock.advance(settings.console_idle_timeout - 120)
        assert (await http.get("/ui/")).status_code == 200
        clock.advance(settings.console_idle_timeout + 1)
        timed_out = await http.get("/ui/")
    assert timed_out.status_code == 303
    assert timed_out.headers["location"] == "/ui/sign-in?reason=expired"
    assert "Max-Age=0" in timed_out.headers["set-cookie"]
    sessions = (await root.get("/Session", params={"type": "console"})).json()["entry"]
    assert [s["resource"]["end_reason"] for s in sessions] == ["idle timeout"]
    assert "console_token" not in sessions[0]["resource"]


async def test_failed_sign_ins_are_throttled_like_other_client_authentication(app: App) -> None:
    async with console_client(app) as http:
        for _ in range(app.settings.auth_failure_limit):
            failed = await http.post("/ui/sign-in", data={"client_id": ROOT_ID, "client_secret": "guess"})
            assert failed.status_code == 401
            assert "Invalid client id or secret" in failed.text
        throttled = await http.post("/ui/sign-in", data={"client_id": ROOT_ID, "client_secret": ROOT_SECRET})
        basic = await http.get("/Client", auth=ROOT)  # the API's Basic is locked for this address too
    assert throttled.status_code == 429
    assert int(throttled.headers["retry-after"]) > 0
    assert "Too many failed client authentications" in throttled.text
    assert basic.status_code == 429


async def test_a_client_no_policy_lets_use_the_console_cannot_sign_in(
    app: App, root: httpx.AsyncClient
) -> None:
    await make_auditor(root, policy=None)
    async with console_client(app) as http:
        refused = await http.post("/ui/sign-in", data={"client_id": AUDITOR[0], "client_secret": AUDITOR[1]})
    assert refused.status_code == 403
    assert "no AccessPolicy allows it GET /ui" in refused.text
    assert "set-cookie" not in refused.headers


async def test_a_policy_limited_client_sees_what_its_policies_allow_and_a_clear_refusal_elsewhere(
    app: App, root: httpx.AsyncClient
) -> None:
    await make_auditor(root)
    async with console_client(app) as http:
        csrf = await sign_in(http, *AUDITOR)
        audit = await http.get("/ui/audit")
        clients = await http.get("/ui/clients")
        keys = await http.get("/ui/keys")
        create = await http.post("/ui/clients", data={"csrf": csrf, "id": "sneaky", "grant_types": "basic"})
        tried = await http.post("/ui/policies/try", data={"csrf": csrf, "method": "GET", "path": "/Client"})
        dashboard = await http.get("/ui/")
    assert audit.status_code == 200
    assert clients.status_code == 403
    assert "Your client <strong>auditor</strong> may not list Clients" in clients.text
    assert "Traceback" not in clients.text
    assert keys.status_code == 403
    assert create.status_code == 403
    assert (await root.get("/Client/sneaky")).status_code == 404
    assert tried.status_code == 403
    assert "may not list AccessPolicies" in tried.text
    assert dashboard.status_code == 200 and "not allowed" in dashboard.text


async def test_losing_the_console_policy_ends_access_at_the_next_page(
    app: App, root: httpx.AsyncClient
) -> None:
    await make_auditor(root)
    async with console_client(app) as http:
        await sign_in(http, *AUDITOR)
        assert (await root.delete("/AccessPolicy/auditor-console")).status_code == 200
        answer = await http.get("/ui/audit")
    assert answer.status_code == 403
    assert "may not use the console" in answer.text


async def test_deactivating_a_client_closes_its_console_sessions(app: App, root: httpx.AsyncClient) -> None:
    await make_auditor(root)
    async with console_client(app) as http:
        await sign_in(http, *AUDITOR)
        stored = (await root.get(f"/Client/{AUDITOR[0]}")).json()
        stored["active"] = False
        assert (await root.put(f"/Client/{AUDITOR[0]}", json=stored)).status_code == 200
        stored["active"] = True
        assert (await root.put(f"/Client/{AUDITOR[0]}", json=stored)).status_code == 200
        answer = await http.get("/ui/audit")
    assert answer.status_code == 303
    sessions = (await root.get("/Session", params={"client.id": AUDITOR[0]})).json()["entry"]
    assert [s["resource"]["end_reason"] for s in sessions] == ["client deactivated"]


async def test_sign_out_closes_the_session_and_the_cookie_stops_working(app: App) -> None:
    async with console_client(app) as http:
        csrf = await sign_in(http, ROOT_ID, ROOT_SECRET)
        cookie = http.cookies["fhirbox_console"]
        out = await http.post("/ui/sign-out", data={"csrf": csrf})
        assert out.status_code == 303 and "Max-Age=0" in out.headers["set-cookie"]
    async with console_client(app) as replay:
        replay.cookies.set("fhirbox_console", cookie, domain="testserver", path="/ui")
        answer = await replay.get("/ui/clients")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/ui/sign-in")


async def test_a_console_cookie_is_not_a_bearer_token_and_a_bearer_token_is_not_a_cookie(
    app: App, root: httpx.AsyncClient
) -> None:
    async with console_client(app) as http:
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        cookie = http.cookies["fhirbox_console"]
    as_bearer = await root.get("/Client", headers={"Authorization": f"Bearer {cookie}"}, auth=None)
    assert as_bearer.status_code == 401
    token = (await root.post("/auth/token", data={"grant_type": "client_credentials"}, auth=ROOT)).json()[
        "access_token"
    ]
    assert (await root.get("/Client", headers={"Authorization": f"Bearer {token}"})).status_code == 200
    async with console_client(app) as http:
        http.cookies.set("fhirbox_console", token, domain="testserver", path="/ui")
        as_cookie = await http.get("/ui/clients")
    assert as_cookie.status_code == 303


async def test_signing_in_again_closes_the_session_the_browser_had(app: App, root: httpx.AsyncClient) -> None:
    async with console_client(app) as http:
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        first = http.cookies["fhirbox_console"]
        await sign_in(http, ROOT_ID, ROOT_SECRET)
        assert http.cookies["fhirbox_console"] != first
    sessions = (await root.get("/Session", params={"type": "console", "_sort": "_lastUpdated"})).json()
    assert [s["resource"].get("end_reason") for s in sessions["entry"]] == ["signed out", None]


async def test_a_sign_in_posted_from_another_site_is_refused(app: App) -> None:
    async with console_client(app) as http:
        credentials = {"client_id": ROOT_ID, "client_secret": ROOT_SECRET}
        cross = await http.post("/ui/sign-in", data=credentials, headers={"Sec-Fetch-Site": "cross-site"})
        other = await http.post("/ui/sign-in", data=credentials, headers={"Origin": "https://evil.example"})
        same = await http.post("/ui/sign-in", data=credentials, headers={"Origin": "http://testserver"})
    assert cross.status_code == other.status_code == 403
    assert same.status_code == 303


async def test_with_the_console_off_ui_is_404(settings: Settings) -> None:
    async with started_app(settings, console=False) as app, console_client(app) as http:
        for path in ("/ui", "/ui/", "/ui/sign-in", "/ui/static/console.css"):
            assert (await http.get(path)).status_code == 404
        assert (await http.post("/ui/sign-in", data={"client_id": "root"})).status_code == 404


async def test_console_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"FHIRBOX_CONSOLE": "false", "FHIRBOX_CONSOLE_IDLE_TIMEOUT": "60"})
    assert settings.console is False and settings.console_idle_timeout == 60
    assert dataclasses.replace(settings, console=True).console
