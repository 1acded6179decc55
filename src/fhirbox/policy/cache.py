"""Compiled AccessPolicies in process memory, and the applicable ones per Client.

Every AccessPolicy write anywhere (this process at once, other processes through the store's change
feed) marks the policy stale; the next authorization re-reads the stale policies before deciding,
so an edit or a deletion governs the very next request. Client changes drop that Client's entry.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from fhirbox.metrics import NOT_COUNTED, CacheCounts
from fhirbox.models.client import CLIENT
from fhirbox.policy.compile import ACCESS_POLICY, CompiledPolicy, compile_policy
from fhirbox.policy.rule import PolicyError
from fhirbox.storage.base import SearchQuery, Store, Stored

log = logging.getLogger("fhirbox.policy")

_PAGE = 500
_MAX_CLIENTS = 10_000


@dataclass(frozen=True, slots=True)
class ClientPolicies:
    """The policies that apply to one Client, in a fixed order (global first, then by id)."""

    policies: tuple[CompiledPolicy, ...]
    needs_body: bool


class PolicyCache:
    def __init__(self, store: Store, *, counts: CacheCounts = NOT_COUNTED) -> None:
        self.store = store
        self.counts = counts
        self._policies: dict[str, CompiledPolicy] = {}
        self._by_client: dict[str, ClientPolicies] = {}
        self._stale: set[str] = set()
        self._reload_all = True
        self._lock = asyncio.Lock()
        store.subscribe(self._changed)

    def _changed(self, type_: str, id_: str) -> None:
        if type_ == ACCESS_POLICY:
            self._stale.add(id_)
        elif type_ == CLIENT:
            self._by_client.pop(id_, None)

    async def for_client(self, client_id: str) -> ClientPolicies:
        """The compiled policies applicable to ``client_id``, reflecting every change reported so far."""
        if self._stale or self._reload_all or self._lock.locked():
            await self.refresh()
        cached = self._by_client.get(client_id)
        if cached is not None:
            self.counts.hit()
        else:
            self.counts.miss()
            cached = self._collect(client_id)
            if len(self._by_client) >= _MAX_CLIENTS:
                self._by_client.clear()
            self._by_client[client_id] = cached
        return cached

    def all(self) -> list[CompiledPolicy]:
        return sorted(self._policies.values(), key=lambda policy: policy.id)

    async def refresh(self) -> None:
        """Bring the compiled policies up to date; concurrent callers wait for the same refresh."""
        async with self._lock:
            while self._reload_all or self._stale:
                if self._reload_all:
                    self._reload_all = False
                    self._stale.clear()
                    try:
                        self._policies = await self._load_all()
                    except BaseException:
                        self._reload_all = True
                        raise
                else:
                    stale, self._stale = self._stale, set()
                    try:
                        for policy_id in sorted(stale):
                            self._replace(policy_id, await self.store.read(ACCESS_POLICY, policy_id))
                    except BaseException:
                        self._stale |= stale
                        raise
                self._by_client = {}

    async def _load_all(self) -> dict[str, CompiledPolicy]:
        policies: dict[str, CompiledPolicy] = {}
        offset = 0
        while True:
            page = await self.store.search(ACCESS_POLICY, SearchQuery(limit=_PAGE, offset=offset))
            for body in page.resources:
                compiled = _compile_stored(body)
                if compiled is not None:
                    policies[compiled.id] = compiled
            offset += len(page.resources)
            if len(page.resources) < _PAGE or offset >= (page.total or 0):
                return policies

    def _replace(self, policy_id: str, stored: Stored | None) -> None:
        compiled = None if stored is None or stored.deleted else _compile_stored(stored.body)
        if compiled is None:
            self._policies.pop(policy_id, None)
        else:
            self._policies[policy_id] = compiled

    def _collect(self, client_id: str) -> ClientPolicies:
        applicable = tuple(
            policy
            for policy in sorted(self._policies.values(), key=lambda p: (not p.links.is_global, p.id))
            if policy.links.is_global or client_id in policy.links.clients
        )
        return ClientPolicies(applicable, any(policy.needs_body for policy in applicable))


def _compile_stored(body: dict[str, object]) -> CompiledPolicy | None:
    """A stored policy that no longer compiles is skipped (it allows nothing), never a crash."""
    try:
        return compile_policy(body)
    except PolicyError as exc:
        log.warning("AccessPolicy/%s is invalid and allows nothing: %s", body.get("id"), exc)
        return None
