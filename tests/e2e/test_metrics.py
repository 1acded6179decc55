"""GET /metrics of a real server, read with prometheus_client's parser: the figures move as requests
are made, cover every worker, and are an API call like any other."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.oauth.support import SECRET, bearer, client_body
from tests.support import ROOT, ServerProcess, wait_until

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(http: httpx.Client) -> Samples:
    response = http.get("/metrics", auth=ROOT)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_counters_move_as_requests_are_made(server: ServerProcess) -> None:
    with server.client() as http:
        before = scrape(http)
        assert http.put("/Client/c1", json=client_body(), auth=ROOT).status_code == 201
        grant = {"grant_type": "client_credentials"}
        token = http.post("/auth/token", data=grant, auth=("c1", SECRET)).json()["access_token"]
        assert http.post("/auth/token", data=grant, auth=("c1", "wrong")).status_code == 401
        assert http.post("/auth/token", data=grant, auth=("nobody", "x")).status_code == 401
        for _ in range(2):
            assert http.get("/Patient/raw-id-7", headers=bearer(token)).status_code == 403
        assert http.get("/Patient", headers=bearer("not-a-token")).status_code == 401
        assert http.get("/no/such/path/raw-9").status_code == 404
        after = scrape(http)
        text = http.get("/metrics", auth=ROOT).text

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("fhirbox_tokens_issued_total", grant="client_credentials", format="opaque") == 1
    assert moved("fhirbox_client_auth_failures_total", reason="invalid_secret") == 1
    assert moved("fhirbox_client_auth_failures_total", reason="unknown_client") == 1
    assert moved("fhirbox_client_auth_failures_total", reason="invalid_token") == 1
    assert moved("fhirbox_http_requests_total", route="/{type}/{id}", method="GET", status="403") == 2
    assert moved("fhirbox_http_requests_total", route="/{type}/{id}", method="PUT", status="201") == 1
    assert moved("fhirbox_http_requests_total", route="/auth/token", method="POST", status="401") == 2
    assert moved("fhirbox_http_requests_total", route="unmatched", method="GET", status="404") == 1
    assert moved("fhirbox_http_request_duration_seconds_count", route="/{type}/{id}") == 3
    assert moved("fhirbox_policy_decisions_total", result="denied") == 2
    assert moved("fhirbox_policy_decisions_total", result="root") >= 2  # PUT and the scrape
    # Two bearer requests: the first may read the Session (the change feed may have evicted it).
    session_lookups = [moved(f"fhirbox_cache_{kind}_total", cache="session") for kind in ("hits", "misses")]
    assert sum(session_lookups) == 2 and session_lookups[0] >= 1
    assert moved("fhirbox_cache_misses_total", cache="policy") == 1
    assert moved("fhirbox_cache_hits_total", cache="policy") == 1
    assert moved("fhirbox_cache_misses_total", cache="secret") >= 1
    assert moved("fhirbox_store_commit_seconds_count") >= 2  # the Client and the Session
    assert moved("fhirbox_store_batch_size_count") >= 2
    assert value(after, "fhirbox_sessions_active") == 1
    assert value(after, "process_resident_memory_bytes") > 0
    assert value(after, "process_cpu_seconds_total") > 0
    # Route templates only, never a raw path.
    assert "raw-id-7" not in text and "raw-9" not in text


def test_sessions_active_counts_sessions_until_they_are_closed(server: ServerProcess) -> None:
    with server.client() as http:
        assert http.put("/Client/c1", json=client_body(), auth=ROOT).status_code == 201
        grant = {"grant_type": "client_credentials"}
        tokens = [
            http.post("/auth/token", data=grant, auth=("c1", SECRET)).json()["access_token"] for _ in range(3)
        ]
        assert value(scrape(http), "fhirbox_sessions_active") == 3
        revoke = {"token": tokens[0]}
        assert http.post("/auth/revoke", data=revoke, auth=("c1", SECRET)).status_code == 200
        assert value(scrape(http), "fhirbox_sessions_active") == 2


def test_with_two_workers_the_figures_cover_both(server_factory: Callable[..., ServerProcess]) -> None:
    server = server_factory(workers=2)
    workers: set[str] = set()
    made = 0

    def both_workers_answered() -> bool:
        nonlocal made
        with server.client() as http:  # a new connection each time: either worker may take it
            response = http.get("/.well-known/jwks.json")
        assert response.status_code == 200
        made += 1
        workers.add(response.headers["x-request-id"].split("-")[0])  # the id's per-process prefix
        return len(workers) == 2

    wait_until(both_workers_answered, timeout=60, interval=0.01)
    for _ in range(6):  # each scrape is answered by either worker: every one sees every worker's figures
        with server.client() as http:
            samples = scrape(http)
        jwks = value(
            samples, "fhirbox_http_requests_total", route="/.well-known/jwks.json", method="GET", status="200"
        )
        assert jwks == made
        assert value(samples, "process_cpu_seconds_total") > 0


def test_metrics_need_root_or_a_client_allowed_by_policy(server: ServerProcess) -> None:
    with server.client() as http:
        assert http.get("/metrics").status_code == 401
        reader = {**client_body(), "grant_types": ["basic"]}
        assert http.put("/Client/prometheus", json=reader, auth=ROOT).status_code == 201
        assert http.get("/metrics", auth=("prometheus", SECRET)).status_code == 403
        policy = {
            "engine": "matcho",
            "matcho": {"request-method": "get", "uri": "/metrics"},
            "link": [{"id": "prometheus", "resourceType": "Client"}],
        }
        assert http.put("/AccessPolicy/scrape", json=policy, auth=ROOT).status_code == 201
        allowed = wait_until(lambda: http.get("/metrics", auth=("prometheus", SECRET)).status_code == 200)
        assert allowed


@pytest.mark.parametrize("public", ["true", "false"])
def test_metrics_public_opens_metrics_without_credentials(
    server_factory: Callable[..., ServerProcess], public: str
) -> None:
    server = server_factory(env={"FHIRBOX_METRICS_PUBLIC": public})
    with server.client() as http:
        response = http.get("/metrics")
    assert response.status_code == (200 if public == "true" else 401)
