"""Guessing client secrets is throttled per address and per (client id, address), and slow hashes run
in a bounded pool, so a guessing flood neither goes unchecked nor starves real clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from fhirbox.app import App
from fhirbox.auth import secrets as secrets_module
from fhirbox.auth.throttle import FailureCounter, Throttled
from fhirbox.settings import Settings
from tests.oauth.support import SECRET, put_client
from tests.support import (
    ROOT,
    ROOT_ID,
    ROOT_SECRET,
    MovableClock,
    basic,
    eventually,
    from_address,
    started_app,
)

LIMIT = 10  # FHIRBOX_AUTH_FAILURE_LIMIT's default, which the ``app`` fixture keeps
ATTACKER, OTHER = "203.0.113.7", "198.51.100.9"


def token_request(client_id: str, secret: str) -> dict[str, Any]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


async def fail_token_requests(http: httpx.AsyncClient, client_id: str, times: int) -> None:
    for _ in range(times):
        response = await http.post("/auth/token", json=token_request(client_id, "wrong"))
        assert response.status_code == 400, response.text
        assert response.json()["error"] == "invalid_client"


def assert_retry_after(response: httpx.Response, most: int) -> None:
    assert 1 <= int(response.headers["retry-after"]) <= most


async def test_the_token_endpoint_answers_429_after_the_limit_for_that_address_only(
    app: App, root: httpx.AsyncClient, clock: MovableClock
) -> None:
    await put_client(root, "api", {"secret": SECRET, "grant_types": ["client_credentials"]})
    async with from_address(app, ATTACKER) as attacker, from_address(app, OTHER) as other:
        await fail_token_requests(attacker, "api", LIMIT)

        locked = await attacker.post("/auth/token", json=token_request("api", SECRET))
        assert locked.status_code == 429, locked.text
        assert locked.json()["error"] == "invalid_client"
        assert locked.headers["cache-control"] == "no-store"
        assert_retry_after(locked, 60)
        # The address is locked, whatever client id it names and at every client-authenticating endpoint.
        root_there = await attacker.post("/auth/token", json=token_request(ROOT_ID, ROOT_SECRET))
        assert root_there.status_code == 429
        revoke = await attacker.post("/auth/revoke", data={"token": "x"}, auth=("api", SECRET))
        assert revoke.status_code == 429
        assert revoke.json()["error"] == "invalid_client"

        # The same client from another address is not locked out.
        assert (await other.post("/auth/token", json=token_request("api", SECRET))).status_code == 200

        clock.advance(61)  # the window has passed
        assert (await attacker.post("/auth/token", json=token_request("api", SECRET))).status_code == 200


async def test_basic_on_the_api_answers_429_with_an_operation_outcome(
    app: App, root: httpx.AsyncClient
) -> None:
    async with from_address(app, ATTACKER) as attacker, from_address(app, OTHER) as other:
        for _ in range(LIMIT):
            response = await attacker.get("/Patient", headers=basic(ROOT_ID, "wrong"))
            assert response.status_code == 401
        locked = await attacker.get("/Patient", auth=ROOT)
        assert locked.status_code == 429
        assert locked.json()["resourceType"] == "OperationOutcome"
        assert locked.json()["id"] == "throttled"
        assert_retry_after(locked, 60)
        assert (await other.get("/Patient", auth=ROOT)).status_code == 200


async def test_successes_of_another_client_do_not_reset_the_count_of_an_address(
    app: App, root: httpx.AsyncClient
) -> None:
    await put_client(root, "victim", {"secret": SECRET, "grant_types": ["client_credentials"]})
    await put_client(root, "mine", {"secret": SECRET, "grant_types": ["client_credentials"]})
    async with from_address(app, ATTACKER) as attacker, from_address(app, OTHER) as other:
        await fail_token_requests(attacker, "victim", LIMIT - 1)
        # A success with a credential the attacker holds clears neither the address's count nor
        # victim's: one valid credential buys no more guesses.
        assert (await attacker.post("/auth/token", json=token_request("mine", SECRET))).status_code == 200
        await fail_token_requests(attacker, "victim", 1)

        locked = await attacker.post("/auth/token", json=token_request("victim", SECRET))
        assert locked.status_code == 429
        assert (await attacker.post("/auth/token", json=token_request("mine", SECRET))).status_code == 429
        assert (await other.post("/auth/token", json=token_request("victim", SECRET))).status_code == 200


class HashGate:
    """Replaces ``verify_secret``: every hash waits until the gate opens, so the pool stays full."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.real: Callable[[str, str], bool] = secrets_module.verify_secret
        self.opened = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        monkeypatch.setattr(secrets_module, "verify_secret", self)

    def __call__(self, secret: str, hashed: str) -> bool:
        with self.lock:
            self.inside += 1
        self.opened.wait(timeout=60)
        return self.real(secret, hashed)

    async def holding(self, count: int) -> None:
        await eventually(lambda: self.inside >= count)


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Iterator[HashGate]:
    hashes = HashGate(monkeypatch)
    try:
        yield hashes
    finally:
        hashes.opened.set()


async def test_a_request_needing_a_hash_gets_503_at_once_when_the_pool_and_queue_are_full(
    settings: Settings, gate: HashGate
) -> None:
    async with started_app(settings, hash_concurrency=1, hash_queue=0) as app:
        async with from_address(app, ATTACKER) as attacker, from_address(app, OTHER) as other:
            hashing = asyncio.create_task(attacker.post("/auth/token", json=token_request("guess", "x")))
            await gate.holding(1)  # the one thread hashes, and nothing may queue behind it
            busy = await asyncio.wait_for(other.post("/auth/token", json=token_request("any", "x")), 10)
            assert busy.status_code == 503, busy.text
            assert busy.json()["error"] == "temporarily_unavailable"
            assert_retry_after(busy, 60)
            api = await asyncio.wait_for(other.get("/Patient", auth=ROOT), 10)
            assert api.status_code == 503
            assert api.json()["id"] == "transient"
            assert_retry_after(api, 60)
            gate.opened.set()
            assert (await asyncio.wait_for(hashing, 30)).json()["error"] == "invalid_client"


async def test_a_known_client_keeps_getting_tokens_from_the_cache_during_a_guessing_flood(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    concurrency, queue, flood = 2, 2, 300
    async with started_app(
        settings, hash_concurrency=concurrency, hash_queue=queue, auth_failure_limit=10_000
    ) as app:
        async with from_address(app, OTHER) as legit, from_address(app, ATTACKER) as attacker:
            await put_client(legit, "api", {"secret": SECRET, "grant_types": ["client_credentials"]})
            first = await legit.post("/auth/token", json=token_request("api", SECRET))
            assert first.status_code == 200  # verified once: now in the cache of verified credentials

            gate = HashGate(monkeypatch)
            try:
                pending = [
                    asyncio.ensure_future(
                        attacker.post("/auth/token", json=token_request("api", f"guess-{n}"))
                    )
                    for n in range(flood)
                ]
                guesses = asyncio.gather(*pending)
                await gate.holding(concurrency)  # the pool is busy with guesses that do not finish
                # Every guess beyond the pool and its queue has been answered before the gate opens,
                # however slowly a loaded machine schedules them.
                await eventually(lambda: sum(task.done() for task in pending) >= flood - concurrency - queue)
                tokens = await asyncio.wait_for(
                    asyncio.gather(
                        *(legit.post("/auth/token", json=token_request("api", SECRET)) for _ in range(50))
                    ),
                    30,
                )
                assert [response.status_code for response in tokens] == [200] * 50
            finally:
                gate.opened.set()
            answers = await asyncio.wait_for(guesses, 60)
        statuses = [response.status_code for response in answers]
        assert statuses.count(503) >= flood - concurrency - queue
        assert set(statuses) <= {400, 503}


def test_the_failure_counter_forgets_expired_keys_and_stays_within_its_cap() -> None:
    now = [1000.0]
    counter = FailureCounter(limit=2, window=10, clock=lambda: now[0], max_keys=100)
    for n in range(1000):
        counter.failed([f"id-{n}"], f"10.0.{n // 250}.{n % 250}")
        assert len(counter._failures) <= 100
    counter.failed(["a"], "192.0.2.1")
    counter.failed(["b"], "192.0.2.1")
    with pytest.raises(Throttled):
        counter.check(["c"], "192.0.2.1")
    now[0] += 10
    counter.check(["c"], "192.0.2.1")
    counter.failed(["x"], "192.0.2.2")  # every other key has expired: all are dropped
    assert len(counter._failures) == 2


async def test_client_ids_no_client_can_have_are_refused_and_counted_by_address(
    app: App, root: httpx.AsyncClient
) -> None:
    """A megabyte-long id is refused like an unknown one (no hash, nothing cached under it) and still
    counts against its address."""
    async with from_address(app, ATTACKER) as attacker:
        for _ in range(LIMIT):
            response = await attacker.post("/auth/token", json=token_request("x" * 1_000_000, "guess"))
            assert response.status_code == 400, response.text
            assert response.json()["error"] == "invalid_client"
        locked = await attacker.post("/auth/token", json=token_request(ROOT_ID, ROOT_SECRET))
        assert locked.status_code == 429
