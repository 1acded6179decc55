"""Keys fetched from a Client's jwks_uri, served by a real HTTP server on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.oauth.assertions import (
    JwksServer,
    assertion,
    assertion_client,
    jwk_set,
    jwks_server,
    key_pair,
    token_form,
)
from tests.oauth.support import put_client
from tests.support import MovableClock, free_port

KEY_A = key_pair("ES384", "key-a")
KEY_B = key_pair("ES384", "key-b", other=True)


@pytest.fixture
def keys() -> Iterator[JwksServer]:
    with jwks_server() as server:
        server.serve(jwk_set(KEY_A), **{"Cache-Control": "max-age=300"})
        yield server


async def token(http: httpx.AsyncClient, signed: str) -> httpx.Response:
    return await http.post("/auth/token", data=token_form(signed))


def refused(response: httpx.Response, check: str) -> None:
    assert response.status_code == 401, response.text
    assert response.json()["error"] == "invalid_client"
    assert check in response.json()["error_description"], response.json()["error_description"]


async def test_keys_are_fetched_once_and_cached(client: httpx.AsyncClient, keys: JwksServer) -> None:
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    for _ in range(3):
        response = await token(client, assertion(KEY_A, "backend", now=None))
        assert response.status_code == 200, response.text
    assert keys.requests == 1


async def test_jku_equal_to_the_registered_jwks_uri_is_accepted(
    client: httpx.AsyncClient, keys: JwksServer
) -> None:
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    assert (await token(client, assertion(KEY_A, "backend", headers={"jku": keys.url}))).status_code == 200


async def test_rotated_key_is_fetched_at_most_once_per_ten_seconds(
    client: httpx.AsyncClient, keys: JwksServer, clock: MovableClock
) -> None:
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    assert (await token(client, assertion(KEY_A, "backend", now=clock()))).status_code == 200
    keys.serve(jwk_set(KEY_B), **{"Cache-Control": "max-age=300"})
    # Just fetched: an unknown kid does not fetch again at once.
    refused(
        await token(client, assertion(KEY_B, "backend", now=clock())), "no registered key with kid 'key-b'"
    )
    refused(await token(client, assertion(KEY_B, "backend", now=clock())), "kid 'key-b'")
    assert keys.requests == 1
    clock.advance(11)
    assert (await token(client, assertion(KEY_B, "backend", now=clock()))).status_code == 200
    assert keys.requests == 2
    # The old key is gone from the new set.
    refused(await token(client, assertion(KEY_A, "backend", now=clock())), "kid 'key-a'")


async def test_cache_expires_after_max_age(
    client: httpx.AsyncClient, keys: JwksServer, clock: MovableClock
) -> None:
    keys.serve(jwk_set(KEY_A), **{"Cache-Control": "public, max-age=30"})
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    assert (await token(client, assertion(KEY_A, "backend", now=clock()))).status_code == 200
    clock.advance(31)
    assert (await token(client, assertion(KEY_A, "backend", now=clock()))).status_code == 200
    assert keys.requests == 2


async def test_max_age_is_capped_at_an_hour(
    client: httpx.AsyncClient, keys: JwksServer, clock: MovableClock
) -> None:
    keys.serve(jwk_set(KEY_A), **{"Cache-Control": "max-age=86400"})
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    assert (await token(client, assertion(KEY_A, "backend", now=clock()))).status_code == 200
    clock.advance(3601)
    assert (await token(client, assertion(KEY_A, "backend", now=clock()))).status_code == 200
    assert keys.requests == 2


@pytest.mark.parametrize("cache_control", ["max-age=0", "no-store", "no-cache"])
async def test_uncacheable_response_is_fetched_for_every_assertion(
    client: httpx.AsyncClient, keys: JwksServer, cache_control: str
) -> None:
    keys.serve(jwk_set(KEY_A), **{"Cache-Control": cache_control})
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    for _ in range(2):
        assert (await token(client, assertion(KEY_A, "backend"))).status_code == 200
    assert keys.requests == 2


async def test_unreachable_jwks_uri_is_invalid_client(client: httpx.AsyncClient) -> None:
    await put_client(client, "backend", assertion_client(jwks_uri=f"http://127.0.0.1:{free_port()}/jwks"))
    refused(await token(client, assertion(KEY_A, "backend")), "jwks_uri is unreachable")


async def test_oversized_jwks_is_invalid_client(client: httpx.AsyncClient, keys: JwksServer) -> None:
    keys.body = b'{"keys": [], "padding": "' + b"x" * 70_000 + b'"}'
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    refused(await token(client, assertion(KEY_A, "backend")), "jwks_uri served more than 65536 bytes")


async def test_slow_jwks_uri_is_invalid_client_after_five_seconds(
    client: httpx.AsyncClient, keys: JwksServer
) -> None:
    keys.delay = 30
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    refused(await token(client, assertion(KEY_A, "backend")), "did not answer within 5 s")


@pytest.mark.parametrize(
    ("status", "body", "headers", "problem"),
    [
        (302, b"", {"Location": "file:///etc/passwd"}, "redirect (302), not followed"),
        (500, b"oops", {}, "HTTP 500"),
        (200, b"<html>", {}, "did not serve JSON"),
        (200, b'{"keys": [{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]}', {}, "private key members"),
    ],
)
async def test_unusable_jwks_response_is_invalid_client(
    client: httpx.AsyncClient,
    keys: JwksServer,
    status: int,
    body: bytes,
    headers: dict[str, str],
    problem: str,
) -> None:
    keys.status, keys.body, keys.headers = status, body, headers
    await put_client(client, "backend", assertion_client(jwks_uri=keys.url))
    refused(await token(client, assertion(KEY_A, "backend")), problem)


async def test_inline_keys_are_tried_before_the_jwks_uri(client: httpx.AsyncClient, keys: JwksServer) -> None:
    await put_client(client, "backend", assertion_client(KEY_B, jwks_uri=keys.url))
    assert (await token(client, assertion(KEY_B, "backend"))).status_code == 200
    assert keys.requests == 0
    assert (await token(client, assertion(KEY_A, "backend"))).status_code == 200
    assert keys.requests == 1
