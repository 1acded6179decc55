"""Micro-benchmark: microseconds the policy authorizer adds to one request with five applicable policies.

Run with ``.venv/bin/python -m bench.policy_eval``. Five policies apply to the client (one global, four
linked); the first four fail and the fifth passes, so every policy is evaluated, as in the worst
allowed request. The figure includes building the request object from the live request, looking up
the client's cached policies and evaluating them; it is the median of several rounds.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Message, Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route
from fhirbox.policy.authorizer import PolicyAuthorizer
from fhirbox.policy.cache import PolicyCache
from fhirbox.storage.base import Stored
from fhirbox.storage.sqlite import SQLiteStore

LINK = [{"resourceType": "Client", "id": "bench-client"}]
POLICIES: dict[str, dict[str, Any]] = {
    "global-admin-header": {"engine": "matcho", "matcho": {"headers": {"x-admin": "present?"}}},
    "observations": {
        "engine": "matcho",
        "link": LINK,
        "matcho": {"request-method": "get", "params": {"resource/type": "Observation"}},
    },
    "writes-by-team": {
        "engine": "matcho",
        "link": LINK,
        "matcho": {
            "request-method": {"$enum": ["post", "put"]},
            "client": {"details": {"team": "present?"}},
            "uri": "#/Encounter/.*",
        },
    },
    "organization-schema": {
        "engine": "json-schema",
        "link": LINK,
        "schema": {
            "required": ["params"],
            "properties": {"params": {"properties": {"resource/type": {"const": "Organization"}}}},
        },
    },
    "patients": {
        "engine": "complex",
        "link": LINK,
        "or": [
            {"engine": "matcho", "matcho": {"params": {"resource/type": "Encounter"}}},
            {
                "engine": "matcho",
                "matcho": {"request-method": "get", "params": {"resource/type": {"$enum": ["Patient"]}}},
            },
        ],
    },
}
ROUNDS, ITERATIONS = 7, 20_000


def live_request() -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/Patient/pt-1",
        "query_string": b"_format=json",
        "headers": [(b"accept", b"application/json"), (b"authorization", b"Basic eDp5")],
        "client": ("127.0.0.1", 5555),
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b""}

    request = Request(scope, receive, max_body_bytes=1 << 20, max_depth=100, request_id="bench")
    request.path_params = {"type": "Patient", "id": "pt-1"}
    return request


def replace_with(body: dict[str, Any]) -> Callable[[Stored | None], dict[str, Any]]:
    return lambda current: dict(body)


async def never_called(request: Request, principal: Principal | None) -> Response:
    raise AssertionError("the benchmark authorizes requests; it never handles them")


async def measure() -> float:
    with tempfile.TemporaryDirectory() as directory:
        store = SQLiteStore.from_url(f"sqlite:///{directory}/bench.db")
        await store.open()
        try:
            for policy_id, body in POLICIES.items():
                await store.mutate("AccessPolicy", policy_id, replace_with(body))
            authorizer = PolicyAuthorizer(PolicyCache(store))
            principal = Principal(client_id="bench-client", client={"id": "bench-client", "secret": "x"})
            route = Route(never_called, "read")
            assert len((await authorizer.cache.for_client("bench-client")).policies) == 5
            rounds = []
            for _ in range(ROUNDS):
                requests = [live_request() for _ in range(ITERATIONS)]
                started = time.perf_counter()
                for request in requests:
                    await authorizer.authorize(request, principal, route)
                rounds.append((time.perf_counter() - started) / ITERATIONS * 1e6)
            return statistics.median(rounds)
        finally:
            await store.close()


def main() -> None:
    micros = asyncio.run(measure())
    print(f"policy evaluation, five applicable policies (last one passes): {micros:.1f} µs per request")


if __name__ == "__main__":
    main()
