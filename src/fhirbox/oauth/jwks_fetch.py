"""Fetching the JWK Set a Client publishes at its ``jwks_uri``, bounded and cached.

A fetch reads at most ``MAX_BYTES`` (stopping as soon as more arrives), takes at most ``TIMEOUT``
seconds in all, follows no redirect, and never blocks the event loop (httpx, asynchronously). A
response is cached for its ``Cache-Control: max-age`` (``DEFAULT_MAX_AGE`` when it says nothing,
never more than ``MAX_MAX_AGE``; ``no-store``, ``no-cache`` or ``max-age=0`` are not cached). A key
id the cached set lacks (a rotation) fetches again, at most once per ``REFETCH_INTERVAL`` per client.
Whatever goes wrong is a ``JwksUnavailable`` naming it; the caller turns it into ``invalid_client``.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from fhirbox.clock import Clock
from fhirbox.models.jwk_set import MAX_SET_BYTES, InvalidJwkSet, check_jwk_set

MAX_BYTES = MAX_SET_BYTES
TIMEOUT = 5.0
DEFAULT_MAX_AGE = 300
MAX_MAX_AGE = 3600
REFETCH_INTERVAL = 10.0
_MAX_ENTRIES = 10_000
_MAX_AGE = re.compile(r"^max-age\s*=\s*\"?([0-9]{1,10})\"?$")


class JwksUnavailable(Exception):
    """The ``jwks_uri`` could not be fetched, or did not serve a usable JWK Set."""


def max_age(cache_control: str | None) -> int:
    """How long a response may be cached, in seconds, per its ``Cache-Control`` (RFC 9111 §5.2.2)."""
    if cache_control is None:
        return DEFAULT_MAX_AGE
    age: int | None = None
    for directive in cache_control.lower().split(","):
        directive = directive.strip()
        if directive in ("no-store", "no-cache", "private") or directive.startswith("no-cache="):
            return 0
        match = _MAX_AGE.match(directive)
        if match is not None:
            age = int(match.group(1))
        elif directive.startswith("max-age"):
            return 0  # a max-age that cannot be read allows nothing
    return DEFAULT_MAX_AGE if age is None else min(age, MAX_MAX_AGE)


@dataclass(slots=True)
class _Fetched:
    keys: list[dict[str, Any]]
    fetched_at: float
    expires_at: float


class JwksFetcher:
    """The keys at each client's ``jwks_uri``; one cache entry per (client, URL), bounded."""

    def __init__(self, clock: Clock, *, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.clock = clock
        self.transport = transport
        self._cache: dict[tuple[str, str], _Fetched] = {}
        self._inflight: dict[tuple[str, str], asyncio.Future[_Fetched]] = {}

    async def keys(self, client_id: str, uri: str, kid: str | None) -> list[dict[str, Any]]:
        """The client's published keys: from the cache while fresh and holding ``kid`` (any key when
        None); else fetched, unless an unknown ``kid`` already fetched within ``REFETCH_INTERVAL``."""
        entry_key = (client_id, uri)
        now = self.clock()
        cached = self._cache.get(entry_key)
        if cached is not None and now < cached.expires_at:
            if kid is None or any(key.get("kid") == kid for key in cached.keys):
                return cached.keys
            if now - cached.fetched_at < REFETCH_INTERVAL:
                return cached.keys  # fetched moments ago: the caller reports the unknown kid
        return (await self._fetch_once(entry_key)).keys

    async def _fetch_once(self, entry_key: tuple[str, str]) -> _Fetched:
        """One fetch per (client, URL) at a time: concurrent callers share its outcome."""
        pending = self._inflight.get(entry_key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Fetched] = asyncio.get_running_loop().create_future()
        self._inflight[entry_key] = future
        try:
            fetched = await self._fetch(entry_key[1])
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        else:
            future.set_result(fetched)
        finally:
            del self._inflight[entry_key]
        if len(self._cache) >= _MAX_ENTRIES:
            self._cache.clear()
        if fetched.expires_at > fetched.fetched_at:
            self._cache[entry_key] = fetched
        else:
            self._cache.pop(entry_key, None)
        return fetched

    async def _fetch(self, uri: str) -> _Fetched:
        try:
            async with asyncio.timeout(TIMEOUT):
                body, cache_control = await self._get(uri)
        except TimeoutError:
            raise JwksUnavailable(f"jwks_uri did not answer within {TIMEOUT:g} s") from None
        except (httpx.HTTPError, httpx.StreamError, httpx.InvalidURL, ValueError, OSError) as exc:
            raise JwksUnavailable(f"jwks_uri is unreachable ({type(exc).__name__})") from None
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise JwksUnavailable("jwks_uri did not serve JSON") from None
        try:
            keys = check_jwk_set(document)
        except InvalidJwkSet as problem:
            raise JwksUnavailable(f"jwks_uri served an unusable JWK Set: it {problem}") from None
        now = self.clock()
        return _Fetched(keys, now, now + max_age(cache_control))

    async def _get(self, uri: str) -> tuple[bytes, str | None]:
        async with (
            httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=TIMEOUT, transport=self.transport
            ) as http,
            http.stream("GET", uri, headers={"Accept": "application/json"}) as response,
        ):
            if response.is_redirect:
                raise JwksUnavailable(f"jwks_uri answered a redirect ({response.status_code}), not followed")
            if response.status_code != 200:
                raise JwksUnavailable(f"jwks_uri answered HTTP {response.status_code}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_BYTES:
                raise JwksUnavailable(f"jwks_uri served more than {MAX_BYTES} bytes")
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > MAX_BYTES:
                    raise JwksUnavailable(f"jwks_uri served more than {MAX_BYTES} bytes")
                chunks.append(chunk)
            if response.headers.get("content-encoding", "identity").lower() not in ("identity", ""):
                raise JwksUnavailable("jwks_uri served a compressed body; serve it uncompressed")
            return b"".join(chunks), response.headers.get("cache-control")
