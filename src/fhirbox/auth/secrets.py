"""Client secrets: salted scrypt hashes, constant-time checks, and a cache of verified credentials.

A correct secret is verified with scrypt once (concurrent requests presenting the same credential share
that one hash); afterwards the pair (client, presented secret) is
remembered under an HMAC with a per-process key, tied to the Client's version, so a changed Client
forgets it. A wrong secret is never cached and always pays the full hash.

Hashes run in a pool of ``concurrency`` threads with at most ``queue`` requests waiting for one; past
that, ``HashBusy`` is raised at once (503). A credential found in the cache never enters the pool.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import secrets
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from fhirbox.auth.throttle import HashBusy
from fhirbox.metrics import NOT_COUNTED, CacheCounts

_SCHEME = "scrypt"
_N, _R, _P = 2**14, 8, 1
_DKLEN = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def hash_secret(secret: str) -> str:
    """A salted scrypt hash: ``scrypt$N$r$p$salt$hash`` (base64)."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=_DKLEN, maxmem=64 * 1024**2)
    return f"{_SCHEME}${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def is_secret_hash(value: str) -> bool:
    return value.startswith(f"{_SCHEME}$") and value.count("$") == 5


def verify_secret(secret: str, hashed: str) -> bool:
    """True when ``secret`` matches ``hashed``; compares in constant time."""
    try:
        scheme, n, r, p, salt, digest = hashed.split("$")
        if scheme != _SCHEME:
            return False
        expected = base64.b64decode(digest)
        actual = hashlib.scrypt(
            secret.encode(),
            salt=base64.b64decode(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected),
            maxmem=64 * 1024**2,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(actual, expected)


# A fixed hash to check against when the client is unknown, so that its absence costs the same time.
_DUMMY_HASH = hash_secret(secrets.token_urlsafe(16))


class SecretVerifier:
    """Verifies client secrets, caching successes per (client, secret, client version)."""

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        concurrency: int | None = None,
        queue: int = 32,
        counts: CacheCounts = NOT_COUNTED,
    ) -> None:
        self.counts = counts
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._max = max_entries
        self._concurrency = concurrency or os.cpu_count() or 1
        self._capacity = self._concurrency + queue
        self._pending = 0  # hashes running or waiting for a thread
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="fhirbox-hash")
        # Hashes running now, by (credential key, client version): see ``_verify_once``.
        self._in_flight: dict[tuple[bytes, int], asyncio.Task[bool]] = {}

    async def _hash(self, check: Callable[[str, str], bool], secret: str, hashed: str) -> bool:
        """``check(secret, hashed)`` in the hash pool; ``HashBusy`` when it and its queue are full."""
        if self._pending >= self._capacity:
            raise HashBusy()
        loop = asyncio.get_running_loop()
        job = self._pool.submit(check, secret, hashed)
        self._pending += 1
        # Counted until the thread is done, even when the request that asked is gone (disconnected).
        job.add_done_callback(lambda _: self._finished(loop))
        return await asyncio.wrap_future(job)

    def _finished(self, loop: asyncio.AbstractEventLoop) -> None:
        """Called in the hash thread: count the job done on the event loop's thread."""

        def release() -> None:
            self._pending -= 1

        try:
            loop.call_soon_threadsafe(release)
        except RuntimeError:  # the loop is closed: nobody counts any more
            pass

    def _cache_key(self, client_id: str, secret: str) -> bytes:
        message = client_id.encode() + b"\x00" + secret.encode()
        # Keyed BLAKE2b is a MAC (RFC 7693): the cache never holds a secret, nor a plain hash of one.
        return hashlib.blake2b(message, key=self._key, digest_size=32).digest()

    def remembers(self, client_id: str, secret: str, version: int) -> bool:
        """True when this exact secret was verified for this version of the client (no hashing)."""
        if self._cache.get(self._cache_key(client_id, secret)) == (client_id, version):
            self.counts.hit()
            return True
        return False

    async def verify(self, client_id: str, secret: str, hashed: str | None, version: int) -> bool:
        """True when ``secret`` is the client's secret. ``hashed`` None means unknown client.

        A cache miss hashes in the pool's threads (scrypt releases the GIL), not on the event loop;
        ``HashBusy`` when the pool is full.
        """
        key = self._cache_key(client_id, secret)
        cached = self._cache.get(key)
        if cached is not None and hashed is not None and cached == (client_id, version):
            self.counts.hit()
            return True
        if hashed is None:
            await self._hash(verify_secret, secret, _DUMMY_HASH)
            return False
        self.counts.miss()
        if not await self._verify_once(key, version, secret, hashed):
            return False
        self._cache[key] = (client_id, version)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return True

    async def _verify_once(self, key: bytes, version: int, secret: str, hashed: str) -> bool:
        """One hash for every concurrent request presenting the same credential: a client's first burst
        after a start (or on a process that has not seen it yet) costs one hash, not one per request,
        and takes one place in the pool. The hash runs as its own task, so a caller that goes away does
        not cancel it for the others."""
        flight = (key, version)
        task = self._in_flight.get(flight)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._hash(verify_secret, secret, hashed))
            self._in_flight[flight] = task
            task.add_done_callback(lambda done: self._landed(flight, done))
        return await asyncio.shield(task)

    def _landed(self, flight: tuple[bytes, int], task: asyncio.Task[bool]) -> None:
        if self._in_flight.get(flight) is task:
            del self._in_flight[flight]
        if not task.cancelled():
            task.exception()  # retrieved here: every waiter may have gone

    def forget(self, client_id: str) -> None:
        """Drop every cached success of ``client_id`` (its Client changed)."""
        stale = [key for key, (cid, _) in self._cache.items() if cid == client_id]
        for key in stale:
            del self._cache[key]
