"""A client limited by SMART scopes is as limited in the console as over the API (both backends)."""

from __future__ import annotations

import httpx

from fhirbox.app import App
from tests.console.support import sign_in

EXPORTER = ("exporter", "exporter-secret-0123456789")
REFUSED = "SMART scopes limit its API access"


async def make_exporter(root: httpx.AsyncClient, grant_types: list[str]) -> None:
    """The README's backend client: SMART scopes to read and search, an allow-everything policy."""
    body = {"secret": EXPORTER[1], "grant_types": grant_types, "scope": ["system/*.rs"]}
    assert (await root.put(f"/Client/{EXPORTER[0]}", json=body)).status_code in (200, 201)
    allow = {"engine": "allow", "link": [{"id": EXPORTER[0], "resourceType": "Client"}]}
    assert (await root.put("/AccessPolicy/exporter", json=allow)).status_code in (200, 201)


def console(app: App) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_a_smart_scoped_client_cannot_sign_in_to_write_what_its_scopes_refuse(
    app: App, root: httpx.AsyncClient
) -> None:
    await make_exporter(root, ["client_credentials"])
    async with console(app) as http:
        # Over the API, every token it can get is read-only: writing a Client is refused.
        token = await http.post("/auth/token", data={"grant_type": "client_credentials"}, auth=EXPORTER)
        assert token.status_code == 200, token.text
        bearer = {"Authorization": f"Bearer {token.json()['access_token']}"}
        assert (
            await http.put("/Client/backdoor", json={"secret": "x" * 20}, headers=bearer)
        ).status_code == 403
        # Its secret in the console (no scopes there) would act beyond them: refused.
        answer = await http.post("/ui/sign-in", data={"client_id": EXPORTER[0], "client_secret": EXPORTER[1]})
    assert answer.status_code == 403
    assert REFUSED in answer.text
    assert "set-cookie" not in answer.headers
    assert (await root.get("/Client/backdoor")).status_code == 404


async def test_a_signed_in_client_given_smart_scopes_loses_the_console_at_the_next_page(
    app: App, root: httpx.AsyncClient
) -> None:
    body = {"secret": EXPORTER[1], "grant_types": ["client_credentials"]}
    assert (await root.put(f"/Client/{EXPORTER[0]}", json=body)).status_code == 201
    allow = {"engine": "allow", "link": [{"id": EXPORTER[0], "resourceType": "Client"}]}
    assert (await root.put("/AccessPolicy/exporter", json=allow)).status_code == 201
    async with console(app) as http:
        csrf = await sign_in(http, *EXPORTER)
        await make_exporter(root, ["client_credentials"])
        created = await http.post(
            "/ui/clients", data={"csrf": csrf, "id": "backdoor", "grant_types": "basic", "secret": "s" * 24}
        )
    assert created.status_code == 403
    assert REFUSED in created.text
    assert (await root.get("/Client/backdoor")).status_code == 404


async def test_a_smart_scoped_client_that_may_use_basic_may_use_the_console(
    app: App, root: httpx.AsyncClient
) -> None:
    """Basic credentials are not limited by SMART scopes, so its secret already acts without them."""
    await make_exporter(root, ["client_credentials", "basic"])
    async with console(app) as http:
        await sign_in(http, *EXPORTER)
        assert (await http.get("/ui/clients")).status_code == 200
