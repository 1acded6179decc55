"""Forwarded headers count only from trusted proxies (FHIRBOX_TRUSTED_PROXIES): for ``remote-addr``,
for the throttling of client authentication, and for links and ``iss`` without FHIRBOX_BASE_URL."""

from __future__ import annotations

from typing import Any

import jwt
import pytest

from fhirbox.http.forwarded import Forwarding
from fhirbox.http.request import Request
from fhirbox.settings import Settings
from tests.oauth.support import SECRET, bearer, client_body, put_client
from tests.support import ROOT, ServerProcess, basic, from_address, started_app

PROXY, UNTRUSTED = "10.0.0.1", "192.0.2.50"


def resolved(peer: str, headers: dict[str, str], trusted: str | None = "10.0.0.0/8") -> tuple[str, str]:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/",
        "headers": [(name.encode(), value.encode()) for name, value in headers.items()],
        "client": (peer, 1234),
        "scheme": "http",
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request"}

    request = Request(scope, receive, max_body_bytes=1, max_depth=1, request_id="t")
    Forwarding(trusted, "http://127.0.0.1:8080", configured=False).apply(request)
    return request.client_addr, request.base_url


@pytest.mark.parametrize(
    ("peer", "headers", "expected"),
    [
        (UNTRUSTED, {"x-forwarded-for": "1.2.3.4"}, UNTRUSTED),
        ("127.0.0.1", {"x-forwarded-for": "1.2.3.4"}, "127.0.0.1"),
        (PROXY, {"x-forwarded-for": "1.2.3.4"}, "1.2.3.4"),
        # walked from the right: a client's own X-Forwarded-For entry (6.6.6.6) is not believed
        (PROXY, {"x-forwarded-for": "6.6.6.6, 1.2.3.4, 10.0.0.2"}, "1.2.3.4"),
        (PROXY, {"forwarded": 'for="[2001:db8::1]:4711";proto=https, for=10.0.0.3'}, "2001:db8::1"),
        (PROXY, {"forwarded": "for=1.2.3.4", "x-forwarded-for": "5.6.7.8"}, "1.2.3.4"),
        (PROXY, {"x-forwarded-for": "1.2.3.4:5555"}, "1.2.3.4"),
        (PROXY, {}, PROXY),
    ],
)
def test_the_client_address_is_forwarded_only_by_trusted_proxies(
    peer: str, headers: dict[str, str], expected: str
) -> None:
    assert resolved(peer, headers)[0] == expected


def test_nothing_is_trusted_by_default() -> None:
    assert resolved(PROXY, {"x-forwarded-for": "1.2.3.4"}, trusted=None)[0] == PROXY


def test_the_base_url_comes_from_a_trusted_proxy() -> None:
    headers = {"x-forwarded-proto": "https", "x-forwarded-host": "api.example.org"}
    assert resolved(PROXY, headers)[1] == "https://api.example.org"
    assert resolved(UNTRUSTED, headers)[1] == "http://127.0.0.1:8080"
    forwarded = {"forwarded": 'for=1.2.3.4;proto=https;host="fhir.example.org:8443"'}
    assert resolved(PROXY, forwarded)[1] == "https://fhir.example.org:8443"
    assert resolved(PROXY, {"x-forwarded-proto": "https", "host": "h.example"})[1] == "https://h.example"
    assert resolved(PROXY, {"x-forwarded-host": "bad/host@x"})[1] == "http://127.0.0.1:8080"


async def test_a_remote_addr_policy_sees_the_forwarded_address_only_from_a_trusted_proxy(
    settings: Settings,
) -> None:
    async with started_app(settings, trusted_proxies=PROXY) as app:
        async with from_address(app, "127.0.0.1") as admin:
            await put_client(admin, "office", {"secret": SECRET, "grant_types": ["basic"]})
            policy = {"engine": "matcho", "link": [{"id": "office", "resourceType": "Client"}]}
            policy["matcho"] = {"remote-addr": "198.51.100.20"}
            response = await admin.put("/AccessPolicy/office", json=policy, auth=ROOT)
            assert response.status_code in (200, 201), response.text
        spoofed = {**basic("office", SECRET), "X-Forwarded-For": "198.51.100.20"}
        async with from_address(app, PROXY) as proxy, from_address(app, UNTRUSTED) as other:
            assert (await proxy.get("/Patient", headers=spoofed)).status_code == 200
            assert (await other.get("/Patient", headers=spoofed)).status_code == 403


async def test_throttling_counts_the_forwarded_address_only_from_a_trusted_proxy(settings: Settings) -> None:
    async with started_app(settings, trusted_proxies=PROXY, auth_failure_limit=3) as app:
        async with from_address(app, PROXY) as proxy, from_address(app, UNTRUSTED) as other:
            guesser = {**basic("root", "wrong"), "X-Forwarded-For": "198.51.100.66"}
            for _ in range(3):
                assert (await proxy.get("/Patient", headers=guesser)).status_code == 401
            assert (
                await proxy.get("/Patient", headers={"X-Forwarded-For": "198.51.100.66"}, auth=ROOT)
            ).status_code == 429
            # Another client behind the same proxy is not locked; an untrusted peer naming the locked
            # address is counted as itself.
            assert (
                await proxy.get("/Patient", headers={"X-Forwarded-For": "198.51.100.67"}, auth=ROOT)
            ).status_code == 200
            assert (
                await other.get("/Patient", headers={"X-Forwarded-For": "198.51.100.66"}, auth=ROOT)
            ).status_code == 200


async def test_links_and_iss_follow_a_trusted_proxy_when_no_base_url_is_set(settings: Settings) -> None:
    public = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "api.example.org"}
    async with started_app(settings, base_url=None, trusted_proxies=PROXY) as app:
        async with from_address(app, PROXY) as proxy, from_address(app, UNTRUSTED) as other:
            await put_client(proxy, "api", client_body(token_format="jwt"))
            allow = {"engine": "allow", "link": [{"id": "api", "resourceType": "Client"}]}
            assert (await proxy.put("/AccessPolicy/api", json=allow, auth=ROOT)).status_code == 201
            metadata = (await proxy.get("/.well-known/oauth-authorization-server", headers=public)).json()
            assert metadata["issuer"] == "https://api.example.org"
            assert metadata["token_endpoint"] == "https://api.example.org/auth/token"
            direct = (await other.get("/.well-known/oauth-authorization-server", headers=public)).json()
            assert direct["issuer"] == "http://127.0.0.1:8080"

            grant = {"grant_type": "client_credentials"}
            token = (await proxy.post("/auth/token", data=grant, auth=("api", SECRET), headers=public)).json()
            claims = jwt.decode(token["access_token"], options={"verify_signature": False})
            assert claims["iss"] == "https://api.example.org"
            # The JWT is accepted where it was issued, not through another base URL.
            assert (
                await proxy.get("/Patient", headers={**public, **bearer(token["access_token"])})
            ).status_code == 200
            assert (await other.get("/Patient", headers=bearer(token["access_token"]))).status_code == 401

            created = await proxy.post("/Patient", json={}, headers=public, auth=ROOT)
            assert created.headers["location"].startswith("https://api.example.org/Patient/")
            found = (await proxy.get("/Patient", headers=public, auth=ROOT)).json()
            assert found["entry"][0]["fullUrl"].startswith("https://api.example.org/Patient/")
            assert (
                (await other.post("/Patient", json={}, headers=public, auth=ROOT))
                .headers["location"]
                .startswith("http://127.0.0.1:8080/Patient/")
            )


def test_a_real_server_ignores_x_forwarded_for_without_trusted_proxies(server: ServerProcess) -> None:
    """uvicorn trusts 127.0.0.1's X-Forwarded-For by default; fhirbox turns that off."""
    with server.client(auth=ROOT) as admin:
        admin.put("/Client/office", json={"secret": SECRET, "grant_types": ["basic"]}).raise_for_status()
        policy = {"engine": "matcho", "link": [{"id": "office", "resourceType": "Client"}]}
        policy["matcho"] = {"remote-addr": "198.51.100.20"}
        admin.put("/AccessPolicy/office", json=policy).raise_for_status()
    with server.client(auth=("office", SECRET)) as office:
        assert office.get("/Patient", headers={"X-Forwarded-For": "198.51.100.20"}).status_code == 403
