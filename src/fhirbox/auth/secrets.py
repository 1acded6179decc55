"""Client secrets: salted scrypt hashes, constant-time checks, and a cache of verified credentials.

A correct secret is verified with scrypt once; afterwards the pair (client, presented secret) is
remembered under an HMAC with a per-process key, tied to the Client's version, so a changed Client
forgets it. A wrong secret is never cached and always pays the full hash.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections import OrderedDict

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

    def __init__(self, max_entries: int = 10_000) -> None:
        self._key = secrets.token_bytes(32)
        self._cache: OrderedDict[bytes, tuple[str, int]] = OrderedDict()
        self._max = max_entries

    def _cache_key(self, client_id: str, secret: str) -> bytes:
        message = client_id.encode() + b"\x00" + secret.encode()
        return hmac.new(self._key, message, hashlib.sha256).digest()

    def remembers(self, client_id: str, secret: str, version: int) -> bool:
        """True when this exact secret was verified for this version of the client (no hashing)."""
        return self._cache.get(self._cache_key(client_id, secret)) == (client_id, version)

    async def verify(self, client_id: str, secret: str, hashed: str | None, version: int) -> bool:
        """True when ``secret`` is the client's secret. ``hashed`` None means unknown client.

        A cache miss hashes in a worker thread (scrypt releases the GIL), not on the event loop.
        """
        key = self._cache_key(client_id, secret)
        cached = self._cache.get(key)
        if cached is not None and hashed is not None and cached == (client_id, version):
            return True
        if hashed is None:
            await asyncio.to_thread(verify_secret, secret, _DUMMY_HASH)
            return False
        if not await asyncio.to_thread(verify_secret, secret, hashed):
            return False
        self._cache[key] = (client_id, version)
        if len(self._cache) > self._max:
            self._cache.popitem(last=False)
        return True

    def forget(self, client_id: str) -> None:
        """Drop every cached success of ``client_id`` (its Client changed)."""
        stale = [key for key, (cid, _) in self._cache.items() if cid == client_id]
        for key in stale:
            del self._cache[key]
