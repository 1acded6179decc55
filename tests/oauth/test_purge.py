"""Expired Sessions are purged in the background after the retention period."""

from __future__ import annotations

from tests.oauth.support import SECRET, client_body
from tests.support import ROOT, ServerProcess, wait_until


def test_expired_sessions_are_purged_after_retention(server_factory: object) -> None:
    assert callable(server_factory)
    server: ServerProcess = server_factory(env={"FHIRBOX_SESSION_RETENTION": "1"})
    with server.client(auth=ROOT) as http:
        http.put("/Client/short", json=client_body(access_token_expiration=1))
        http.put("/Client/long", json=client_body())
        for client_id in ("short", "long"):
            response = http.post(
                "/auth/token", data={"grant_type": "client_credentials"}, auth=(client_id, SECRET)
            )
            assert response.status_code == 200

        def short_sessions_gone() -> bool:
            return bool(http.get("/Session", params={"client.id": "short"}).json()["total"] == 0)

        wait_until(short_sessions_gone, timeout=10)
        assert http.get("/Session", params={"client.id": "long"}).json()["total"] == 1
