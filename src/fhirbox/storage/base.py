"""The Store interface every backend implements, and the values that cross it.

A store keeps the current version of each resource and every past version. All writes go through
``mutate``: the backend reads the current state, calls a pure function to decide the new body, and
writes it atomically with a new version from one global, increasing counter. Concurrent writers to one
resource are serialised, so no update is lost and If-Match checks are exact.
"""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

log = logging.getLogger("fhirbox.storage")

Status = Literal["active", "deleted"]
Op = Literal["create", "update", "delete"]


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of a resource. ``body`` already carries ``id``, ``resourceType`` and ``meta``."""

    type: str
    id: str
    version: int
    op: Op
    body: dict[str, Any]

    @property
    def deleted(self) -> bool:
        return self.op == "delete"


class _Delete:
    """Returned by a mutation function to delete the resource."""


DELETE = _Delete()


class _Unchanged:
    """Returned by a mutation function to leave the resource as it is."""


UNCHANGED = _Unchanged()

Mutation = Callable[["Stored | None"], "dict[str, Any] | _Delete | _Unchanged"]


class UnstorableValue(ValueError):
    """Raised by ``mutate`` for a body the backend cannot hold (PostgreSQL text cannot contain
    U+0000); nothing is written. The API answers it as an invalid resource."""


@dataclass(frozen=True, slots=True)
class MutationResult:
    before: Stored | None
    after: Stored | None

    @property
    def created(self) -> bool:
        return (
            self.after is not None and not self.after.deleted and (self.before is None or self.before.deleted)
        )


@dataclass(frozen=True, slots=True)
class Filter:
    """``path`` (a dotted JSON path) equals ``value``, compared as text, number or boolean."""

    path: tuple[str, ...]
    value: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """A comparison on a column: ``field`` is ``id`` or ``lastUpdated``; ``op`` one of eq ne gt lt ge le."""

    field: str
    op: str
    value: str


@dataclass(frozen=True, slots=True)
class SortKey:
    """``path`` is ``("_id",)``, ``("_lastUpdated",)`` or a dotted JSON path."""

    path: tuple[str, ...]
    descending: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    filters: Sequence[Filter] = ()
    comparisons: Sequence[Comparison] = ()
    ids: Sequence[str] = ()
    sort: Sequence[SortKey] = ()
    limit: int = 100
    offset: int = 0


@dataclass(slots=True)
class SearchResult:
    resources: list[dict[str, Any]]
    total: int


def now_iso() -> str:
    """UTC now as ISO 8601 with microseconds; fixed width, so text order is time order."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp(body: dict[str, Any], type_: str, id_: str, version: int, when: str, created_at: str) -> None:
    body["resourceType"] = type_
    body["id"] = id_
    meta = body.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.update({"versionId": str(version), "lastUpdated": when, "createdAt": created_at})
    body["meta"] = meta


def next_version(
    type_: str,
    id_: str,
    before: Stored | None,
    outcome: dict[str, Any] | _Delete | _Unchanged,
    version: int,
    when: str,
) -> Stored | None:
    """The version a mutation's ``outcome`` writes over ``before``, stamped; None when nothing changes.

    Every backend writes through this, so ``op``, ``meta`` and ``createdAt`` mean the same everywhere.
    """
    if outcome is UNCHANGED:
        return None
    live = before is not None and not before.deleted
    op: Op
    if outcome is DELETE:
        if before is None or not live:
            return None
        body = dict(before.body)
        op = "delete"
    else:
        assert isinstance(outcome, dict)
        body = outcome
        op = "update" if live else "create"
    created_at = before.body.get("meta", {}).get("createdAt", when) if live and before else when
    stamp(body, type_, id_, version, when, created_at)
    return Stored(type_, id_, version, op, body)


ChangeListener = Callable[[str, str], None]


@dataclass
class _Listeners:
    callbacks: list[ChangeListener] = field(default_factory=list)

    def notify(self, type_: str, id_: str) -> None:
        for callback in self.callbacks:
            try:
                callback(type_, id_)
            except Exception:
                log.exception("change listener failed for %s/%s", type_, id_)


class Store(ABC):
    """Durable resource storage. Implementations: ``SQLiteStore`` and ``PostgresStore``."""

    def __init__(self) -> None:
        self._listeners = _Listeners()
        self._feed_task: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Connect and apply pending migrations."""

    @abstractmethod
    async def close(self) -> None:
        """Finish pending writes and disconnect."""

    @abstractmethod
    async def ping(self) -> bool:
        """True while the database answers."""

    # -- reads -----------------------------------------------------------------------------------
    @abstractmethod
    async def read(self, type_: str, id_: str) -> Stored | None:
        """The current version, deleted or not; None when it never existed."""

    @abstractmethod
    async def read_version(self, type_: str, id_: str, version: int) -> Stored | None:
        """One past or current version."""

    @abstractmethod
    async def history(self, type_: str, id_: str, limit: int, offset: int) -> tuple[list[Stored], int]:
        """Versions newest first, with the total count."""

    @abstractmethod
    async def search(self, type_: str, query: SearchQuery) -> SearchResult:
        """Current, non-deleted resources of a type matching ``query``."""

    # -- writes ----------------------------------------------------------------------------------
    @abstractmethod
    async def _mutate(self, type_: str, id_: str, mutation: Mutation) -> MutationResult:
        """Apply ``mutation`` atomically and durably; exceptions it raises propagate unchanged."""

    async def mutate(self, type_: str, id_: str, mutation: Mutation) -> MutationResult:
        """Read, decide and write one resource atomically; answered only once durable."""
        result = await self._mutate(type_, id_, mutation)
        if result.after is not None and result.after is not result.before:
            self._listeners.notify(type_, id_)
        return result

    @abstractmethod
    async def purge(self, type_: str, path: tuple[str, ...], below: float) -> int:
        """Remove resources (and their history) whose number at ``path`` is below ``below``.

        ``path`` holds fixed keys (letters, digits, ``_``, ``-``); ``migrations.PURGE_AFTER`` is indexed.
        """

    # -- changes from every process ---------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> None:
        """Call ``listener(type, id)`` after each write, in this process at once and from other
        processes sharing the database within about ``poll_interval`` seconds."""
        self._listeners.callbacks.append(listener)

    @abstractmethod
    async def _watch_changes(self, poll_interval: float) -> None:
        """Run forever, reporting other processes' writes to ``self._listeners``."""

    def start_change_feed(self, poll_interval: float) -> None:
        if self._feed_task is None:
            self._feed_task = asyncio.get_running_loop().create_task(self._watch_changes(poll_interval))

    async def stop_change_feed(self) -> None:
        if self._feed_task is not None:
            self._feed_task.cancel()
            try:
                await self._feed_task
            except asyncio.CancelledError:
                pass
            self._feed_task = None
