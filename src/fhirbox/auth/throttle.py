"""Throttling of client authentication: failures counted per address and per (client id, address).

``ClientDirectory.authenticate_any`` consults a ``FailureCounter`` before any secret is hashed and
tells it every outcome, so every endpoint that authenticates clients by secret (the token and
revocation endpoints, Basic on the API, and any later one such as introspection) is throttled alike;
each endpoint only turns ``Throttled`` and ``HashBusy`` into an answer in its own format.

Counts live in this process's memory: with several worker processes, each counts for itself.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict, deque
from collections.abc import Iterable

from fhirbox.clock import Clock

log = logging.getLogger("fhirbox.auth")

_MAX_KEYS = 100_000


class Throttled(Exception):
    """Too many failed authentications from this address (or for this client id from it)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"Too many failed client authentications; retry after {retry_after} s")
        self.retry_after = retry_after


class HashBusy(Exception):
    """Every slot for slow secret hashes is taken and the queue is full."""

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__("The server is busy checking client secrets; retry shortly")
        self.retry_after = retry_after


def _seconds(delay: float) -> int:
    return max(1, math.ceil(delay))


class FailureCounter:
    """Failed client authentications in a sliding window, per address and per (client id, address).

    After ``limit`` failures within ``window`` seconds, ``check`` raises ``Throttled`` until the oldest
    of those failures is ``window`` old; attempts refused meanwhile are not counted (they cost nothing).
    A success clears the count of its address and of its (client id, address) pair, and nothing else:
    not other addresses, and not the pairs of other client ids at that address, so someone holding one
    valid credential cannot reset the guesses counted against another client.

    Memory is bounded: at most ``max_keys`` keys of at most ``limit`` timestamps each; expired keys are
    dropped first, then the least recently failing ones.
    """

    def __init__(self, limit: int, window: float, clock: Clock, *, max_keys: int = _MAX_KEYS) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.max_keys = max_keys
        # key -> timestamps of the latest failures (at most ``limit``), least recently failing key first
        self._failures: OrderedDict[tuple[str, ...], deque[float]] = OrderedDict()

    @staticmethod
    def _keys(client_ids: Iterable[str], address: str) -> list[tuple[str, ...]]:
        return [("addr", address), *(("client", client_id, address) for client_id in client_ids)]

    def check(self, client_ids: Iterable[str], address: str) -> None:
        """Raise ``Throttled`` when ``address``, or any of ``client_ids`` at it, is locked."""
        if not self._failures:  # nothing has failed lately: nothing is locked
            return
        now = self.clock()
        wait = 0.0
        for key in self._keys(client_ids, address):
            times = self._failures.get(key)
            if times is not None and len(times) >= self.limit:
                wait = max(wait, times[0] + self.window - now)
        if wait > 0:
            raise Throttled(_seconds(wait))

    def failed(self, client_ids: Iterable[str], address: str) -> list[tuple[str, ...]]:
        """Count one failed authentication of ``client_ids`` (one request's readings) from ``address``;
        the keys this failure locked (``("addr", address)`` or ``("client", id, address)``)."""
        now = self.clock()
        locked: list[tuple[str, ...]] = []
        for key in dict.fromkeys(self._keys(client_ids, address)):
            times = self._failures.get(key)
            if times is None:
                times = self._failures[key] = deque(maxlen=self.limit)
            else:
                self._failures.move_to_end(key)
            while times and times[0] + self.window <= now:
                times.popleft()
            times.append(now)
            if len(times) == self.limit:
                self._log_locked(key)
                locked.append(key)
        if len(self._failures) > self.max_keys:
            self._shrink(now)
        return locked

    def succeeded(self, client_id: str, address: str) -> None:
        """Clear the count of ``client_id`` at ``address``. The address's own count only expires:
        a valid credential of one's own must not buy more guesses at other clients."""
        self._failures.pop(("client", client_id, address), None)

    def _shrink(self, now: float) -> None:
        # Least recently failing first: drop while expired, then the oldest until within the cap.
        while self._failures:
            key, times = next(iter(self._failures.items()))
            if times[-1] + self.window > now and len(self._failures) <= self.max_keys:
                break
            del self._failures[key]

    def _log_locked(self, key: tuple[str, ...]) -> None:
        if key[0] == "addr":
            log.warning(
                "client authentication from %s locked for %s s after %d failures",
                key[1],
                self.window,
                self.limit,
            )
        else:
            log.warning(
                "client authentication of client id %r from %s locked for %s s after %d failures",
                key[1],
                key[2],
                self.window,
                self.limit,
            )
