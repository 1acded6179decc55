"""The console in a real Chromium against a real ``fhirbox serve``, on both backends: what an
operator does in a day, from signing in as root to an auditor refused on the Clients page.

Screenshots of each page go to ``FHIRBOX_SCREENSHOT_DIR`` (``make screenshots``: docs/screenshots),
else to the test's temporary directory."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx

from tests.console.browser import chromium
from tests.console.support import AUDITOR, AUDITOR_POLICY
from tests.support import ROOT, ROOT_ID, ROOT_SECRET, ServerProcess, wait_until

INVALID_POLICY = "engine: matcho\nmatcho:\n  request-method: get\n  uri: {$starts-with: /Patient}\n"
VALID_POLICY = (
    "engine: matcho\n"
    "matcho:\n"
    "  request-method: get\n"
    "  uri: '#^/Patient'\n"
    "link:\n"
    "  - {resourceType: Client, id: reporting}\n"
)


def screenshot_dir(tmp_path: Path) -> Path:
    chosen = os.environ.get("FHIRBOX_SCREENSHOT_DIR")
    directory = Path(chosen) if chosen else tmp_path / "screenshots"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def test_an_operators_day_in_the_console(server: ServerProcess, tmp_path: Path, backend: str) -> None:
    shots = screenshot_dir(tmp_path)
    api = httpx.Client(base_url=server.url, auth=ROOT, timeout=10)
    csp_errors: list[str] = []
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on(
            "console",
            lambda message: (
                csp_errors.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )

        def snap(name: str) -> None:
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)

        # Sign in as root.
        page.goto(f"{server.url}/ui/")
        assert page.url.endswith("/ui/sign-in")
        snap("sign-in")
        page.fill("#client_id", ROOT_ID)
        page.fill("#client_secret", ROOT_SECRET)
        page.click("button[type=submit]")
        assert page.locator("h1").inner_text() == "Dashboard"

        # Create a client: the server generates its secret and shows it once.
        page.click("text=Clients")
        page.click("text=New client")
        snap("client-new")
        page.fill("#id", "reporting")
        page.select_option("#token_format", "jwt")
        page.fill("#scope", "system/Patient.rs")
        page.click("text=Create client")
        secret = page.input_value("#new-secret")
        assert len(secret) >= 43
        snap("client-secret")
        page.click("text=Open reporting")
        assert secret not in page.content()
        snap("client")

        # Give it a matcho policy through the editor: an invalid one shows the 422 at its line.
        page.click("nav >> text=Policies")
        page.click("text=New policy")
        page.fill("#id", "reporting-read")
        page.fill("#text", INVALID_POLICY)
        page.click("text=Save")
        error = page.locator("#policy-error")
        assert "Invalid AccessPolicy: matcho.uri: unknown matcho operator" in error.inner_text()
        assert page.locator(".offending").inner_text().strip() == "uri: {$starts-with: /Patient}"
        snap("policy-editor")
        page.fill("#text", VALID_POLICY)
        page.click("text=Save")
        assert page.url.endswith("/ui/policies/reporting-read?saved=1")
        page.click("nav >> text=Policies")
        assert page.locator("tr", has_text="reporting-read").locator("a", has_text="reporting").count() == 2

        # Get a token with "try a token", and use it on the API.
        page.click("text=Try a token")
        page.fill("#client_id", "reporting")
        page.fill("#client_secret", secret)
        page.click("text=Request a token")
        assert page.locator("#token-status").inner_text() == "Response: 200"
        response = json.loads(page.locator("pre.json").first.inner_text())
        assert "at+jwt" in page.content()
        snap("token")
        bearer = {"Authorization": f"Bearer {response['access_token']}"}
        assert httpx.get(f"{server.url}/Patient", headers=bearer).status_code == 200

        # The issuance in the audit list and on the dashboard (written by the audit trail).
        page.goto(f"{server.url}/ui/audit?type=token-issued&client=reporting")
        snap("audit")
        assert page.locator("text=No events match.").count() == 0
        page.locator("tbody a").first.click()
        assert "Client/reporting" in page.content() and "token-issued" in page.content()
        snap("audit-event")
        page.click("nav >> text=Dashboard")
        tile = page.locator(".tiles a", has_text="Tokens issued, last hour").locator(".value").inner_text()
        assert tile == "1"
        assert page.locator("svg .bar[height]").count() == 60
        snap("dashboard")

        # Close the Session and see the token refused by the API.
        page.goto(f"{server.url}/ui/sessions?client=reporting&state=active")
        snap("sessions")
        page.locator("tbody tr", has_text="client_credentials").locator("text=Close").click()
        wait_until(lambda: httpx.get(f"{server.url}/Patient", headers=bearer).status_code == 401)

        page.click("nav >> text=Keys")
        snap("keys")

        # Usable on a phone: nothing wider than the screen.
        page.set_viewport_size({"width": 390, "height": 844})
        page.click("nav >> text=Dashboard")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        snap("dashboard-phone")
        page.set_viewport_size({"width": 1280, "height": 900})
        page.click("text=Sign out")
        assert "You are signed out." in page.content()

        # An auditor client may use the console but is refused on the Clients page.
        make_auditor(api)
        page.fill("#client_id", AUDITOR[0])
        page.fill("#client_secret", AUDITOR[1])
        page.click("button[type=submit]")
        page.click("nav >> text=Clients")
        assert page.locator("h1").inner_text() == "Not allowed"
        assert "may not list Clients" in page.content()
        snap("refused")
        page.click("nav >> text=Audit")
        assert page.locator("h1").inner_text() == "Audit trail"
        page.click("text=Sign out")
        page.goto(f"{server.url}/ui/clients")
        assert "/ui/sign-in" in page.url
    assert csp_errors == []


def make_auditor(api: httpx.Client) -> None:
    body: dict[str, Any] = {"secret": AUDITOR[1], "grant_types": ["client_credentials"]}
    assert api.put(f"/Client/{AUDITOR[0]}", json=body).status_code in (200, 201)
    assert api.put(f"/AccessPolicy/{AUDITOR_POLICY['id']}", json=AUDITOR_POLICY).status_code in (200, 201)
