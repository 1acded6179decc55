"""Helpers for console tests: signing in, reading a page's CSRF token, and a read-only auditor."""

from __future__ import annotations

import re
from typing import Any

import httpx

CSRF = re.compile(r'name="csrf" value="([0-9a-f]+)"')
SECRET_SHOWN = re.compile(r'id="new-secret" class="secret" readonly value="([^"]+)"')
# Everything this client may do: use the console (GET /ui) and read the audit trail.
AUDITOR_POLICY = {
    "resourceType": "AccessPolicy",
    "id": "auditor-console",
    "engine": "matcho",
    "matcho": {"request-method": "get", "uri": "#^/(ui|AuditEvent)(/.*)?$"},
    "link": [{"resourceType": "Client", "id": "auditor"}],
}
AUDITOR = ("auditor", "auditor-secret-0123456789")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, client_id: str, secret: str) -> str:
    """Sign in; returns the CSRF token of the new console session."""
    answer = await http.post("/ui/sign-in", data={"client_id": client_id, "client_secret": secret})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/ui/"
    page = await http.get("/ui/")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def make_auditor(root: httpx.AsyncClient, policy: dict[str, Any] | None = AUDITOR_POLICY) -> None:
    created = await root.put(
        f"/Client/{AUDITOR[0]}",
        json={"secret": AUDITOR[1], "grant_types": ["client_credentials"]},
    )
    assert created.status_code in (200, 201), created.text
    if policy is not None:
        written = await root.put(f"/AccessPolicy/{policy['id']}", json=policy)
        assert written.status_code in (200, 201), written.text
