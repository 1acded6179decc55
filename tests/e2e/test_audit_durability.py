"""An acknowledged token always has its audit record: SIGKILL the server right after the 200s, then
read the trail from a new server on the same database."""

from __future__ import annotations

import threading
from collections.abc import Callable

import httpx

from tests.oauth.support import SECRET
from tests.support import ROOT, ServerProcess

THREADS = 6
TOKENS_PER_THREAD = 15


def test_every_acknowledged_token_has_its_audit_record_after_sigkill(
    server_factory: Callable[..., ServerProcess],
) -> None:
    server = server_factory()
    with server.client(auth=ROOT) as http:
        body = {"secret": SECRET, "grant_types": ["client_credentials"]}
        assert http.put("/Client/app", json=body).status_code == 201
    issued: list[str] = []  # Session ids of tokens answered 200
    lock = threading.Lock()

    def load() -> None:
        with httpx.Client(base_url=server.url, auth=("app", SECRET), timeout=10.0) as http:
            for _ in range(TOKENS_PER_THREAD):
                response = http.post("/auth/token", data={"grant_type": "client_credentials"})
                assert response.status_code == 200, response.text
                with lock:
                    issued.append(response.json()["access_token"])

    workers = [threading.Thread(target=load) for _ in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    server.kill()  # SIGKILL: no shutdown, nothing flushed beyond what was committed

    restarted = server_factory()
    with restarted.client(auth=ROOT) as http:
        sessions = http.get("/Session", params={"client.id": "app", "_count": "1000"}).json()
        events = http.get("/AuditEvent", params={"type.code": "token-issued", "_count": "1000"}).json()
    session_ids = {entry["resource"]["id"] for entry in sessions["entry"]}
    recorded = {entry["resource"]["entity"][0]["what"]["reference"] for entry in events["entry"]}
    assert len(issued) == THREADS * TOKENS_PER_THREAD
    assert len(session_ids) == len(issued)
    assert recorded == {f"Session/{session_id}" for session_id in session_ids}
    text = str(events)
    assert not any(token in text for token in issued)
