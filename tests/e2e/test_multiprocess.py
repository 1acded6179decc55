"""Two real server processes on one database behave as one server (SQLite file or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.support import ROOT, ServerProcess, basic, wait_until

JSON_PATCH = {"Content-Type": "application/json-patch+json"}


@pytest.fixture
def servers(server_factory: Callable[..., ServerProcess]) -> tuple[ServerProcess, ServerProcess]:
    return server_factory(), server_factory()


def test_a_write_through_one_server_is_readable_through_the_other(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = servers
    with first.client(auth=ROOT) as a, second.client(auth=ROOT) as b:
        created = a.put("/Patient/p1", json={"name": [{"family": "Doe"}]})
        assert created.status_code == 201
        read = b.get("/Patient/p1")
        assert read.status_code == 200
        assert read.json()["name"] == [{"family": "Doe"}]
        assert read.headers["etag"] == created.headers["etag"]

        assert b.put("/Patient/p1", json={"name": [{"family": "Roe"}]}).status_code == 200
        assert a.get("/Patient/p1").json()["name"] == [{"family": "Roe"}]
        assert b.delete("/Patient/p1").status_code == 200
        assert a.get("/Patient/p1").status_code == 410
        assert a.get("/Patient/p1/_history").json()["total"] == 3


def test_concurrent_patches_split_across_two_servers_lose_no_update(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = servers
    with first.client(auth=ROOT) as a:
        assert a.put("/List/l1", json={"items": []}).status_code == 201

    def append(worker: int) -> list[int]:
        server = servers[worker % 2]
        codes = []
        with server.client(auth=ROOT) as http:
            for n in range(10):
                patch = [{"op": "add", "path": "/items/-", "value": worker * 100 + n}]
                codes.append(http.patch("/List/l1", json=patch, headers=JSON_PATCH).status_code)
        return codes

    with ThreadPoolExecutor(8) as pool:
        codes = [code for worker_codes in pool.map(append, range(8)) for code in worker_codes]
    assert codes == [200] * 80
    with second.client(auth=ROOT) as b:
        items = b.get("/List/l1").json()["items"]
    assert sorted(items) == sorted(worker * 100 + n for worker in range(8) for n in range(10))


def test_if_match_updates_split_across_two_servers_lose_no_increment(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, _ = servers
    with first.client(auth=ROOT) as a:
        assert a.put("/Counter/c1", json={"count": 0}).status_code == 201

    def increment(worker: int) -> int:
        """Read-modify-write with If-Match, retrying on 412: every increment must land once."""
        conflicts = 0
        with servers[worker % 2].client(auth=ROOT) as http:
            for _ in range(10):
                while True:
                    current = http.get("/Counter/c1")
                    body = {"count": current.json()["count"] + 1}
                    headers = {"If-Match": current.headers["etag"]}
                    written = http.put("/Counter/c1", json=body, headers=headers)
                    if written.status_code == 200:
                        break
                    assert written.status_code == 412, written.text
                    conflicts += 1
        return conflicts

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(increment, range(6)))
    with first.client(auth=ROOT) as a:
        assert a.get("/Counter/c1").json()["count"] == 60


def test_a_client_secret_changed_through_one_server_stops_working_on_the_other(
    servers: tuple[ServerProcess, ServerProcess],
) -> None:
    first, second = servers
    with first.client(auth=ROOT) as a, second.client() as b:
        client = {"secret": "old-secret", "grant_types": ["basic"]}
        assert a.put("/Client/worker", json=client).status_code == 201
        # Authenticated (not 401), then refused for lack of a policy: the secret is now cached there.
        assert b.get("/Patient", headers=basic("worker", "old-secret")).status_code == 403

        client = {"secret": "new-secret", "grant_types": ["basic"]}
        assert a.put("/Client/worker", json=client).status_code == 200

        def old_secret_refused() -> bool:
            response: httpx.Response = b.get("/Patient", headers=basic("worker", "old-secret"))
            return response.status_code == 401

        wait_until(old_secret_refused, timeout=10.0)
        assert b.get("/Patient", headers=basic("worker", "new-secret")).status_code == 403


@pytest.mark.parametrize("token_format", ["opaque", "jwt"])
def test_a_session_closed_through_one_server_is_refused_by_the_other_on_the_next_request(
    server_factory: Callable[..., ServerProcess], token_format: str
) -> None:
    """No change poll runs during the test (an hour apart): the other server must see the closed
    Session before it trusts its cache, on SQLite as on PostgreSQL. One base URL, as behind a load
    balancer, so that a JWT's issuer is both servers'."""
    env = {"FHIRBOX_CHANGE_POLL_INTERVAL": "3600", "FHIRBOX_BASE_URL": "http://fhirbox.test"}
    first, second = server_factory(env=env), server_factory(env=env)
    settings = {"token_format": "jwt"} if token_format == "jwt" else {}
    client = {"secret": "s3cret", "grant_types": ["client_credentials"]}
    with first.client(auth=ROOT) as a, second.client() as b:
        assert a.put("/Client/worker", json={**client, "auth": {"client_credentials": settings}}).is_success
        for _ in range(5):
            token = a.post(
                "/auth/token", data={"grant_type": "client_credentials"}, auth=("worker", "s3cret")
            ).json()["access_token"]
            bearer = {"Authorization": f"Bearer {token}"}
            # Authenticated (403: no policy), so the other server now holds the Session in its cache.
            assert b.get("/Patient", headers=bearer).status_code == 403
            assert a.delete("/Session", headers=bearer, auth=None).status_code in (200, 204)
            refused = b.get("/Patient", headers=bearer)
            assert refused.status_code == 401, refused.text
            assert "closed" in refused.headers["www-authenticate"]
