"""The Store interface every backend implements, the values that cross it, and what the SQL backends
share: the search statements (each backend spells only its own placeholders, collation and JSON
conditions), the migration loop, the JSON path and number syntax.

A store keeps the current version of each resource and every past version. All writes go through
``mutate``: the backend reads the current state, calls a pure function to decide the new body, and
writes it atomically with a new version from one global, increasing counter. Concurrent writers to one
resource are serialised, so no update is lost and If-Match checks are exact.

A write may bring along new resources of other types (``attach``), created in the same transaction:
a record of the change is committed with the change or not at all. ``add`` creates such resources on
their own, batched with whatever else is being written. Storage knows nothing of what they mean.
"""

from __future__ import annotations

import asyncio
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal, NamedTuple

import orjson

log = logging.getLogger("fhirbox.storage")

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
    U+0000); nothing is written. The request pipeline answers it as an invalid resource (422)."""


class QueryTooCostly(Exception):
    """Raised by ``search`` when the database gave up on a search that took longer than the store
    allows one (SQLite: ``SEARCH_BUDGET`` seconds). The request pipeline answers it 400."""


@dataclass(frozen=True, slots=True)
class MutationResult:
    before: Stored | None
    after: Stored | None

    @property
    def created(self) -> bool:
        return (
            self.after is not None and not self.after.deleted and (self.before is None or self.before.deleted)
        )


class NewResource(NamedTuple):
    """A resource created alongside other writes, in their transaction. Its id is new (a random one):
    it is written as a creation whatever is stored under that id. (A named tuple: one is made for
    every token issued, and a frozen dataclass takes three times as long to make.)"""

    type: str
    id: str
    body: dict[str, Any]


# The one append-only type: AuditEvents are created once and never changed, so they are kept apart,
# in ``audit_event`` (the columns of ``resource``): no history rows, no version drawn from the shared
# sequence, no change notification, and only the indexes their searches and purge need. Each is
# stored under its ``recorded`` instant (``updated``, ``meta.lastUpdated``): searches on ``recorded``
# and the retention purge read that column. They are created only by ``Store.add`` and ``attach``.
APPEND_ONLY = "AuditEvent"


class Appended(NamedTuple):
    """An append-only resource as its ``audit_event`` row holds it: stamped and serialised where it
    is made (``appended``, ``Audit.event``), so that the writer, holding the transaction, only stores
    it."""

    type: str
    id: str
    version: int
    op: str
    updated: str
    text: str


def appended(type_: str, id_: str, body: dict[str, Any]) -> Appended:
    """The row of a new append-only resource: version 1, a creation, stored under its ``recorded``
    instant. ``body`` is stamped in place (``id``, ``meta``): the caller hands it over."""
    recorded = body["recorded"]
    stamp(body, type_, id_, 1, recorded, recorded)
    return Appended(type_, id_, 1, "create", recorded, orjson.dumps(body).decode())


def split_added(added: Sequence[NewResource | Appended]) -> tuple[list[NewResource], list[Appended]]:
    """What an ``attach`` returned: the resources to create as any other, and the append-only ones
    as their ``audit_event`` rows."""
    created: list[NewResource] = []
    rows: list[Appended] = []
    for resource in added:
        if isinstance(resource, Appended):
            rows.append(resource)
        elif resource.type == APPEND_ONLY:
            rows.append(appended(resource.type, resource.id, dict(resource.body)))
        else:
            created.append(resource)
    return created, rows


# Decides, from a write's result, the new resources committed with it (none: an empty sequence).
Attach = Callable[[MutationResult], Sequence[NewResource | Appended]]


def current_table(type_: str) -> str:
    """The table holding the current version of ``type_``'s resources."""
    return "audit_event" if type_ == APPEND_ONLY else "resource"


def history_table(type_: str) -> str:
    """The table holding every version of ``type_``'s resources (an AuditEvent has only its one)."""
    return "audit_event" if type_ == APPEND_ONLY else "history"


@dataclass(frozen=True, slots=True)
class Filter:
    """``path`` (a dotted JSON path) equals ``value``, compared as text, number or boolean."""

    path: tuple[str, ...]
    value: str


@dataclass(frozen=True, slots=True)
class Comparison:
    """A comparison on a column or an indexed instant: ``field`` is ``id``, ``lastUpdated`` or a key of
    ``INSTANT_FIELDS``; ``op`` one of eq ne gt lt ge le. Values compare as text (instants are
    fixed-width UTC text, so text order is time order)."""

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
    # False: do not count every match (FHIR ``_total=none``); the result's ``total`` is then None.
    total: bool = True


@dataclass(slots=True)
class SearchResult:
    resources: list[dict[str, Any]]
    total: int | None


def storable_text(text: str) -> bool:
    """Whether both backends can store (and hash) ``text``: no U+0000 (PostgreSQL text cannot hold it)
    and no lone surrogate (JSON's ``"\\ud800"`` decodes to one; it has no UTF-8 encoding)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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


# -- what the SQL backends share -------------------------------------------------------------------
# A key of a JSON path written into SQL text rather than bound (index definitions, purge).
PATH_KEY = re.compile(r"^[A-Za-z0-9_\-]{1,64}\Z")
# A JSON number, as a search value is compared with numbers.
JSON_NUMBER = re.compile(r"^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?\Z")
# The column a Comparison's ``field`` compares, and the column a special SortKey sorts by.
COLUMNS = {"id": "id", "lastUpdated": "updated"}
# Top-level fields holding an instant in the store's fixed-width UTC text, compared with gt/lt in
# searches; each is indexed per type (see migrations), so only these can be compared.
INSTANT_FIELDS = ("recorded",)
SORT_COLUMNS: dict[tuple[str, ...], str] = {("_id",): "id", ("_lastUpdated",): "updated"}

Steps = tuple[tuple[int, tuple[str, ...]], ...]


def matches_filters(body: dict[str, Any], filters: Iterable[Filter]) -> bool:
    """Whether ``body`` matches every one of ``filters`` as a search of either backend would: some
    value at the path equals the filter's value as text, as a number or as a boolean, arrays met on
    the way and at the end being looked into one level (PostgreSQL's lax paths, SQLite's json_each)."""
    return all(_matches(body, flt.path, flt.value) for flt in filters)


def _matches(node: Any, path: tuple[str, ...], value: str) -> bool:
    if not path:
        items = node if isinstance(node, list) else [node]
        return any(_equals(item, value) for item in items)
    children = node if isinstance(node, list) else [node]
    for child in children:
        if isinstance(child, dict) and path[0] in child and _matches(child[path[0]], path[1:], value):
            return True
    return False


def _equals(item: Any, value: str) -> bool:
    if isinstance(item, bool):
        return value == ("true" if item else "false")
    if isinstance(item, str):
        return item == value
    if isinstance(item, int | float) and JSON_NUMBER.match(value):
        try:
            return item == (int(value) if value.lstrip("-").isdigit() else float(value))
        except (OverflowError, ValueError):
            return False
    return False


class StoreUnavailable(Exception):
    """The database cannot be opened: missing, unreachable, not fhirbox's, or of a newer schema. The
    message is one line for the operator (it may name the database URL: redact it before printing)."""


class SchemaTooNew(StoreUnavailable):
    """The database was migrated by a newer fhirbox: this code does not know its schema."""


def json_path(keys: Iterable[str]) -> str:
    """An SQL/JSON path naming each of ``keys`` in quotes, as given: ``$."name"."family"``."""
    return "$" + "".join(f'."{key}"' for key in keys)


async def apply_migrations(
    steps: Steps,
    applied: Collection[int],
    execute: Callable[..., Awaitable[object]],
    record: str,
    on_applied: Callable[[int], None],
) -> None:
    """Run, in order, each of ``steps`` whose version is not ``applied``: its statements, then
    ``record`` (which stores the version and the time in ``schema_migrations``), then ``on_applied``.

    The caller holds the transaction, and the lock, that make the whole run atomic and run once.
    A database already at a version higher than any of ``steps`` is refused (``SchemaTooNew``):
    this code would misread a schema it does not know.
    """
    known = max((version for version, _ in steps), default=0)
    newest = max(applied, default=0)
    if newest > known:
        raise SchemaTooNew(
            f"the database's schema is version {newest}, newer than the version {known} this fhirbox "
            "knows: it was migrated by a newer fhirbox; run that version (or restore a backup taken "
            "before the upgrade)"
        )
    for version, statements in steps:
        if version in applied:
            continue
        for statement in statements:
            await execute(statement)
        await execute(record, version, now_iso())
        on_applied(version)


@dataclass(frozen=True, slots=True)
class SearchStatements:
    """A search as two statements: the count of all matches, and one page of their bodies."""

    count: str
    count_params: list[Any]
    select: str
    select_params: list[Any]


class SearchSql(ABC):
    """Builds a search's statements: the same in every backend but for what a subclass spells its way.

    Parameters are bound in the order their placeholders appear in the statement, so positional
    (``?``) and numbered (``$1``) placeholders both work. One instance builds one search.
    """

    OPERATORS: ClassVar[Mapping[str, str]] = {
        "eq": "=",
        "ne": "<>",
        "gt": ">",
        "lt": "<",
        "ge": ">=",
        "le": "<=",
    }
    # The id column as compared and sorted (a backend may give it a collation).
    ID: ClassVar[str] = "id"

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.type_ = ""

    @abstractmethod
    def bind(self, value: Any) -> str:
        """Add ``value`` to the parameters; returns its placeholder."""

    @abstractmethod
    def ids(self, ids: Sequence[str]) -> str:
        """The condition: ``id`` is one of ``ids``."""

    @abstractmethod
    def filter(self, flt: Filter) -> str:
        """The condition for ``flt``."""

    @abstractmethod
    def order_by_path(self, key: SortKey, direction: str) -> str:
        """The ORDER BY term for a sort on a JSON path."""

    @abstractmethod
    def instant(self, name: str) -> str:
        """The expression for the top-level field ``name`` of ``INSTANT_FIELDS``, as its index has it."""

    def comparison(self, comparison: Comparison) -> str | None:
        """The condition; None when nothing can match, "" when everything does."""
        if comparison.field in INSTANT_FIELDS and self.type_ == APPEND_ONLY:
            column = "updated"  # an AuditEvent's ``recorded``, compared bytewise on both backends
        elif comparison.field in INSTANT_FIELDS:
            column = self.instant(comparison.field)
        else:
            column = self._column(COLUMNS[comparison.field])
        return f"{column} {self.OPERATORS[comparison.op]} {self.bind(comparison.value)}"

    def _column(self, column: str) -> str:
        return self.ID if column == "id" else column

    def _order(self, key: SortKey) -> str:
        direction = "DESC" if key.descending else "ASC"
        column = SORT_COLUMNS.get(key.path)
        if column is not None:
            return f"{self._column(column)} {direction}"
        return self.order_by_path(key, direction)

    def statements(self, type_: str, query: SearchQuery) -> SearchStatements | None:
        """The statements for current, non-deleted ``type_`` resources matching ``query``; None when
        nothing can match."""
        self.type_ = type_
        table = current_table(type_)
        where = [f"type = {self.bind(type_)}", f"op {self.OPERATORS['ne']} 'delete'"]
        if query.ids:
            where.append(self.ids(query.ids))
        for comparison in query.comparisons:
            condition = self.comparison(comparison)
            if condition is None:
                return None
            if condition:
                where.append(condition)
        for flt in query.filters:
            where.append(self.filter(flt))
        where_sql = " AND ".join(where)
        where_params = list(self.params)
        order = [self._order(key) for key in query.sort]
        order.append(f"updated ASC, {self.ID} ASC")
        limit, offset = self.bind(query.limit), self.bind(query.offset)
        # Only fixed SQL fragments are joined here; every value is a bound parameter.
        return SearchStatements(
            f"SELECT count(*) FROM {table} AS stored WHERE {where_sql}",  # noqa: S608
            where_params,
            f"SELECT body FROM {table} AS stored WHERE {where_sql} "  # noqa: S608
            f"ORDER BY {', '.join(order)} LIMIT {limit} OFFSET {offset}",
            self.params,
        )


ChangeListener = Callable[[str, str], None]


def _unobserved(seconds: float, writes: int) -> None:
    return None


@dataclass
class _Listeners:
    callbacks: list[ChangeListener] = field(default_factory=list)

    def notify(self, type_: str, id_: str) -> None:
        for callback in self.callbacks:
            try:
                callback(type_, id_)
            except Exception:
                log.exception("change listener failed for %s/%s", type_, id_)


# Versions a store remembers as its own at most before it forgets them all (see ``Store._note_own``).
_MAX_OWN_VERSIONS = 100_000


class Store(ABC):
    """Durable resource storage. Implementations: ``SQLiteStore`` and ``PostgresStore``."""

    def __init__(self) -> None:
        self._listeners = _Listeners()
        self._feed_task: asyncio.Task[None] | None = None
        self._commit_observer: Callable[[float, int], None] = _unobserved
        # Versions this process committed that its change feed has not passed yet (``_note_own``).
        self._own_versions: set[int] = set()

    def observe_commits(self, observer: Callable[[float, int], None]) -> None:
        """Tell ``observer`` the duration in seconds and the number of writes of every write
        transaction committed (it may be called from the store's writer thread)."""
        self._commit_observer = observer

    # -- lifecycle -------------------------------------------------------------------------------
    @abstractmethod
    async def open(self, *, create: bool = True) -> None:
        """Connect and apply pending migrations. A database that cannot be opened, or whose schema is
        newer than this code knows, raises ``StoreUnavailable``; so, with ``create=False``, does one
        that does not exist yet or holds no fhirbox tables (it is not created)."""

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
    async def _mutate(
        self, type_: str, id_: str, mutation: Mutation, attach: Attach | None
    ) -> tuple[MutationResult, Sequence[NewResource | Appended]]:
        """Apply ``mutation`` and create what ``attach`` returns, in one transaction, durably;
        exceptions either raises propagate unchanged (and nothing of this write is stored)."""

    async def mutate(
        self, type_: str, id_: str, mutation: Mutation, *, attach: Attach | None = None
    ) -> MutationResult:
        """Read, decide and write one resource atomically; answered only once durable.

        ``attach(result)`` is called inside the write, after ``mutation``, with what it decided
        (``after is before`` when nothing changed); the resources it returns are created in the same
        transaction.
        """
        if type_ == APPEND_ONLY:
            raise ValueError(f"{APPEND_ONLY} resources are append-only: create them with Store.add")
        return await self._write_and_report(type_, id_, mutation, attach)

    async def add(self, resources: Sequence[NewResource | Appended]) -> None:
        """Create ``resources`` (new ids) in one transaction shared with other writes waiting at the
        same time; answered only once durable. With ``attach``, the way AuditEvents are created."""
        if not resources:
            return
        # Carried by a write that changes nothing, so they are batched and committed like any other;
        # keyed by the first new id, so that it waits for no other write (PostgreSQL locks each key).
        first = resources[0]
        await self._write_and_report(
            first.type, first.id, lambda _current: UNCHANGED, lambda _result: resources
        )

    async def _write_and_report(
        self, type_: str, id_: str, mutation: Mutation, attach: Attach | None
    ) -> MutationResult:
        """``_mutate``, then tell the listeners what it changed and created (AuditEvents aside:
        nothing caches them)."""
        result, added = await self._mutate(type_, id_, mutation, attach)
        if result.after is not None and result.after is not result.before:
            self._listeners.notify(type_, id_)
        for resource in added:
            if resource.type != APPEND_ONLY:
                self._listeners.notify(resource.type, resource.id)
        return result

    @abstractmethod
    async def purge_appended(self, before: str) -> int:
        """Remove the append-only resources (AuditEvents) stored before the instant ``before``
        (fixed-width UTC text); the number removed."""

    @abstractmethod
    async def purge(self, type_: str, path: tuple[str, ...], below: float) -> int:
        """Remove resources (and their history) whose number at ``path`` is below ``below``.

        ``path`` holds fixed keys (letters, digits, ``_``, ``-``); ``migrations.PURGE_AFTER`` is indexed.
        """

    # -- keys used once --------------------------------------------------------------------------
    @abstractmethod
    async def remember_once(self, namespace: str, key: str, expires_at: float, *, now: float) -> bool:
        """Record ``key`` in ``namespace`` until ``expires_at``; True when it was not already recorded
        (or its record had expired by ``now``), False when it was. Atomic and durable: of concurrent
        calls with one key, from any process on the database, exactly one gets True."""

    @abstractmethod
    async def forget_expired(self, now: float) -> int:
        """Remove the records of ``remember_once`` that expired before ``now``; the number removed."""

    # -- changes from every process ---------------------------------------------------------------
    def subscribe(self, listener: ChangeListener) -> None:
        """Call ``listener(type, id)`` after each write, in this process at once and from other
        processes sharing the database within about ``poll_interval`` seconds."""
        self._listeners.callbacks.append(listener)

    def catch_up(self) -> Awaitable[bool] | None:
        """Report every write another process committed before this call; called before trusting a
        cache whose staleness would matter. None when that is done on return (SQLite: its file's
        change counter, checked at once); otherwise an awaitable that is done when it is (PostgreSQL:
        the notifications committed before it have arrived), with False when that cannot be known
        (the change feed is down): then the cache must not be trusted."""
        return None

    @abstractmethod
    async def _watch_changes(self, poll_interval: float) -> None:
        """Run forever, reporting other processes' writes to ``self._listeners``."""

    def _note_own(self, versions: Iterable[int]) -> None:
        """Remember versions this process committed: ``mutate`` reports them, so the change feed
        skips them (``_written_here``). Callable from a writer thread (set operations hold the GIL)."""
        own = self._own_versions
        if len(own) > _MAX_OWN_VERSIONS:  # noted but never passed (a transaction failed after noting)
            own.clear()  # forgetting costs at worst a second report of a few writes
        own.update(versions)

    def _forget_own(self, versions: Iterable[int]) -> None:
        """Forget versions noted by ``_note_own`` that were not committed after all."""
        self._own_versions.difference_update(versions)

    def _written_here(self, version: int) -> bool:
        """True, and forgotten, when this process committed ``version`` (already reported)."""
        if version in self._own_versions:
            self._own_versions.discard(version)
            return True
        return False

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
