"""PostgreSQL backend: JSONB bodies, a sequence for versions, advisory locks and LISTEN/NOTIFY.

Writes are committed in batches. A batch is read, decided and stored without a transaction of its own
(two round trips); the statement that stores it takes an advisory lock on each resource's type and id
(a row lock cannot cover a row that does not exist yet) and writes a resource only if its row is still
the one read. The writes that lost that race are committed again in a transaction holding the locks
from the read to the commit. Versions come from a sequence, and ``pg_notify`` in the same transaction
tells every process sharing the database, at commit, which resource changed. Tables are created
unqualified, so a ``search_path`` in the URL (``postgresql://.../db?search_path=tenant``) puts the
whole store in that schema.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from fhirbox.settings import redacted_url
from fhirbox.storage import migrations
from fhirbox.storage.base import (
    APPEND_ONLY,
    JSON_NUMBER,
    Appended,
    Attach,
    Comparison,
    Filter,
    Mutation,
    MutationResult,
    NewResource,
    SearchQuery,
    SearchResult,
    SearchSql,
    SortKey,
    Store,
    Stored,
    StoreUnavailable,
    UnstorableValue,
    apply_migrations,
    current_table,
    history_table,
    json_path,
    next_version,
    now_iso,
    split_added,
    storable_text,
)

log = logging.getLogger("fhirbox.storage.postgres")

POOL_MIN = 2
POOL_MAX = 10
# Queries of batched reads running at once, and keys read by one (``PostgresStore.read``).
READ_QUERIES = 2
READ_BATCH = 100
PING_TIMEOUT = 2.0
FEED_CONNECT_TIMEOUT = 10.0
FEED_CANCEL_WAIT = 2.0
CLOSE_TIMEOUT = 10.0
# How often the change listener checks its connection when no notification arrives.
LISTENER_CHECK_INTERVAL = 5.0
# After the listener reconnects, resources written this long before it lost its connection are
# reported again: a write stamps ``updated`` before it commits, so one committed during the gap can
# carry an earlier time.
REPLAY_MARGIN = timedelta(seconds=60)
# PostgreSQL text (and so JSONB) cannot hold U+0000.
_NUL_ERRORS = (
    asyncpg.exceptions.UntranslatableCharacterError,
    asyncpg.exceptions.CharacterNotInRepertoireError,
)


_NUL_MESSAGE = "PostgreSQL cannot store the character U+0000 in a resource or its id"
# Writes committed together at most (one transaction), and how many batches commit at a time: with
# 32 connections, three batches of up to 16 keep PostgreSQL working while the event loop serves the
# next requests (one writer taking every write waiting made one batch of 32 and left each side idle
# while the other worked: docs/decisions.md).
MAX_BATCH = 16
WRITERS = 3
# The advisory lock of each (type, id) of a batch, in one order, then ``$3`` versions taken under
# them: the locks are an aggregate, complete before the first version is drawn.
_LOCK_AND_NUMBER = (
    "SELECT array_agg(nextval('resource_version_seq')) FROM generate_series(1, $3),"
    " (SELECT count(*) FROM (SELECT pg_advisory_xact_lock(hashtext(t), hashtext(i))"
    "  FROM unnest($1::text[], $2::text[]) AS k(t, i) ORDER BY hashtext(t), hashtext(i)) AS l"
    "  OFFSET 0) AS locked"
)
# The current version of several resources at once (``read``'s batches): a primary-key probe per key
# (LIMIT 1 keeps the planner from turning the subquery back into a join). As a join on ``unnest``, the
# plan kept for any parameters (ten keys assumed) scanned the whole table while it had no statistics or
# few pages, and a batch's hash join then read every row, Sessions included: docs/decisions.md.
_READ_MANY_OF = (
    "SELECT r.type, r.id, r.version, r.op, r.body FROM unnest($1::text[], $2::text[]) AS k(type, id)"
    " CROSS JOIN LATERAL (SELECT * FROM resource WHERE type = k.type AND id = k.id LIMIT 1{lock}) AS r"
)
_READ_MANY = _READ_MANY_OF.format(lock="")
_MORE_VERSIONS = "SELECT array_agg(nextval('resource_version_seq')) FROM generate_series(1, $1)"
# The same, locked for the writer's transaction.
_READ_CURRENT = _READ_MANY_OF.format(lock=" FOR UPDATE")
# Every new version of a batch into history, the latest of each resource into ``resource``, and a
# notification per version, delivered to every listening process at commit.
_VERSIONS = (
    "WITH v AS ("
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $6::text[], $7::bool[])"
    " AS v(type, id, version, op, body, latest)"
    "), current AS ("
    " INSERT INTO resource (type, id, version, op, updated, body)"
    " SELECT type, id, version, op, $5, body::jsonb FROM v WHERE latest"
    " ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, op = excluded.op,"
    " updated = excluded.updated, body = excluded.body"
    "), past AS ("
    " INSERT INTO history (type, id, version, op, updated, body)"
    " SELECT type, id, version, op, $5, body::jsonb FROM v"
    ")"
)
_NOTIFY = " SELECT count(pg_notify($8, type || '/' || id || '/' || version)) FROM v"
_WRITE_VERSIONS = _VERSIONS + _NOTIFY
# The same, and the batch's AuditEvents into ``audit_event`` (no history, no notification: see
# APPEND_ONLY), in the same round trip.
_WRITE_VERSIONS_AND_EVENTS = (
    _VERSIONS  # noqa: S608 (fixed SQL fragments only)
    + ", appended AS ("
    " INSERT INTO audit_event (type, id, version, op, updated, body)"
    " SELECT type, id, 1, 'create', updated, body::jsonb"
    " FROM unnest($9::text[], $10::text[], $11::text[], $12::text[]) AS a(type, id, updated, body)"
    " ON CONFLICT (type, id) DO UPDATE SET updated = excluded.updated, body = excluded.body"
    ")" + _NOTIFY
)


# The current version of several resources, and ``$3`` versions drawn (one row, its resource columns
# null, when none of them exists): what a batch written without locks starts from.
_NUMBER_AND_READ = (
    "SELECT n.versions, r.type, r.id, r.version, r.op, r.body FROM"  # noqa: S608 (fixed SQL fragments)
    " (SELECT array_agg(nextval('resource_version_seq')) AS versions FROM generate_series(1, $3)) AS n"
    " LEFT JOIN LATERAL (" + _READ_MANY + ") AS r ON true"
)
# A batch decided over rows read without locks, stored in one statement (one transaction), each write's
# rows only if its resource is still as read (``expected``: the version read, null when there was none).
# ``guard`` ties a row to the write whose resource decides its fate (-1: stored in any case); ``checked``
# marks a write's own resource (the others are resources attached to it, new ones, stored as creations
# whatever is under their id). The guards of the writes that won are returned: the others wrote nothing.
# The locks (the same as ``_LOCK_AND_NUMBER``'s, in the same order) are taken before the first row of
# ``v``, so a process holding one from its read to its commit (``_commit_locked``, or an older fhirbox
# during an upgrade) is waited for, then seen: an UPDATE re-checks a row changed meanwhile, an INSERT
# meets the row committed meanwhile. Versions were drawn with the read: one committed since is larger,
# and has changed the row, so the write loses and versions of a resource still grow in commit order.
_UNLESS_RACED = (
    "WITH locked AS ("
    " SELECT count(*) AS n FROM (SELECT pg_advisory_xact_lock(hashtext(t), hashtext(i))"
    " FROM unnest($1::text[], $2::text[], $10::bool[]) AS k(t, i, checked) WHERE checked"
    " ORDER BY hashtext(t), hashtext(i)) AS l"
    "), v AS ("
    " SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $6::jsonb[], $7::bool[],"
    " $8::bigint[], $9::int[], $10::bool[])"
    " AS v(type, id, version, op, body, latest, expected, guard, checked)"
    " WHERE (SELECT n FROM locked) >= 0"
    "), created AS ("
    " INSERT INTO resource (type, id, version, op, updated, body)"
    " SELECT type, id, version, op, $5, body FROM v WHERE latest AND checked AND expected IS NULL"
    " ON CONFLICT (type, id) DO NOTHING RETURNING type, id"
    "), changed AS ("
    " UPDATE resource AS r SET version = v.version, op = v.op, updated = $5, body = v.body FROM v"
    " WHERE v.latest AND v.checked AND v.expected IS NOT NULL"
    " AND r.type = v.type AND r.id = v.id AND r.version = v.expected"
    " RETURNING r.type, r.id"
    "), won AS ("
    " SELECT v.guard FROM v JOIN (SELECT type, id FROM created UNION ALL SELECT type, id FROM changed) AS w"
    " ON v.type = w.type AND v.id = w.id AND v.latest AND v.checked"
    " UNION ALL SELECT -1"
    "), kept AS ("
    " SELECT * FROM v WHERE guard IN (SELECT guard FROM won)"
    "), attached AS ("
    " INSERT INTO resource (type, id, version, op, updated, body)"
    " SELECT type, id, version, op, $5, body FROM kept WHERE latest AND NOT checked"
    " ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, op = excluded.op,"
    " updated = excluded.updated, body = excluded.body"
    "), past AS ("
    " INSERT INTO history (type, id, version, op, updated, body)"
    " SELECT type, id, version, op, $5, body FROM kept"
    ")"
)
_WON = (
    " SELECT array_agg(guard) FROM won"
    " WHERE (SELECT count(pg_notify($11, type || '/' || id || '/' || version)) FROM kept) >= 0"
)
_WRITE_UNLESS_RACED = _UNLESS_RACED + _WON
# The same, and the batch's AuditEvents, each kept or dropped with the write it belongs to.
_WRITE_UNLESS_RACED_AND_EVENTS = (
    _UNLESS_RACED  # noqa: S608 (fixed SQL fragments only)
    + ", appended AS ("
    " INSERT INTO audit_event (type, id, version, op, updated, body)"
    " SELECT type, id, 1, 'create', updated, body::jsonb"
    " FROM unnest($12::text[], $13::text[], $14::text[], $15::text[], $16::int[])"
    " AS a(type, id, updated, body, guard)"
    " WHERE guard IN (SELECT guard FROM won)"
    " ON CONFLICT (type, id) DO UPDATE SET updated = excluded.updated, body = excluded.body"
    ")" + _WON
)


@dataclass(slots=True)
class _Write:
    """One ``mutate`` call waiting for the writer."""

    type_: str
    id_: str
    mutation: Mutation
    attach: Attach | None
    future: asyncio.Future[tuple[MutationResult, Sequence[NewResource | Appended]]]


class _Versions:
    """Versions drawn under a batch's locks, handed out in increasing order; more drawn when needed."""

    def __init__(self, conn: asyncpg.Connection, drawn: list[int]) -> None:
        self.conn = conn
        self.free = sorted(drawn, reverse=True)

    async def ensure(self, count: int) -> None:
        if len(self.free) < count:
            more = await self.conn.fetchval(_MORE_VERSIONS, count - len(self.free) + 16)
            self.free = sorted(more, reverse=True) + self.free

    def peek(self) -> int:
        return self.free[-1]

    def take(self) -> int:
        return self.free.pop()


def _fail(write: _Write, error: BaseException, cause: BaseException | None) -> None:
    if not write.future.done():
        if cause is not None:
            error.__cause__ = cause
        write.future.set_exception(error)


class _Uncommitted(Exception):
    """Raised when a batch was committed but for ``writes`` (they lost a race, and their retry under
    locks failed): only they are still to commit."""

    def __init__(self, writes: list[_Write]) -> None:
        super().__init__(f"{len(writes)} writes of the batch are not committed")
        self.writes = writes


@dataclass(slots=True)
class _Decided:
    """What a batch's writes decided over the rows read: each write's answer, and the rows to store.

    Each row, and each answer (``guards``), carries its guard: the index (in ``keys``) of the resource
    whose write decides its fate, or -1 for a write that changed no resource of its own over a version
    this batch made (its rows are stored, its answer given, in any case); ``checked`` marks a write's
    own resource, the one whose row must still be as read."""

    when: str
    settled: list[tuple[_Write, Any, BaseException | None]]
    guards: list[int]  # by settled entry: the guard of its write
    written: list[tuple[Stored, int, bool]]
    appended: list[tuple[Appended, int]]


async def _decide(
    batch: list[_Write],
    keys: dict[tuple[str, str], int],
    current: dict[tuple[str, str], Stored | None],
    versions: _Versions,
    when: str,
) -> _Decided:
    """Apply each write of ``batch`` in order to the rows read (``current``, updated as it goes, so a
    resource written twice in a batch is written over its first new version)."""
    decided = _Decided(when, [], [], [], [])
    changed: set[tuple[str, str]] = set()  # resources an earlier write of the batch changed
    for write in batch:
        await versions.ensure(1)
        key = (write.type_, write.id_)
        before = current.get(key)
        # A write over a version an earlier write of the batch made depends on it: whatever it
        # decided (nothing to do, an error) holds only if that one is stored, so it shares its guard.
        guard = keys[key] if key in changed else -1
        try:
            outcome = write.mutation(before)
            after = next_version(write.type_, write.id_, before, outcome, versions.peek(), when)
            result = MutationResult(before, before if after is None else after)
            added = tuple(write.attach(result)) if write.attach is not None else ()
            if any(_has_nul(resource.type, resource.id) for resource in added):
                raise UnstorableValue(_NUL_MESSAGE)
            created, rows = split_added(added)
        except Exception as error:
            decided.settled.append((write, None, error))
            decided.guards.append(guard)
            continue
        if after is not None:
            guard = keys[key]
            changed.add(key)
            versions.take()
            current[key] = after
            decided.written.append((after, guard, True))
        decided.appended.extend((row, guard) for row in rows)
        await versions.ensure(len(created))
        for resource in created:
            new = next_version(resource.type, resource.id, None, dict(resource.body), versions.take(), when)
            assert new is not None
            decided.written.append((new, guard, False))
        decided.settled.append((write, (result, added), None))
        decided.guards.append(guard)
    return decided


def _keys_of(batch: list[_Write]) -> tuple[dict[tuple[str, str], int], list[str], list[str]]:
    """The batch's resources once each, in the order first written, with their index (a write's
    guard), and their types and ids as the statements take them."""
    keys = {key: index for index, key in enumerate(dict.fromkeys((w.type_, w.id_) for w in batch))}
    return keys, [key[0] for key in keys], [key[1] for key in keys]


def _answer(settled: list[tuple[_Write, Any, BaseException | None]]) -> None:
    """Answer each write (unless its caller gave up)."""
    for write, value, failure in settled:
        if write.future.done():
            continue
        if failure is not None:
            write.future.set_exception(failure)
        else:
            write.future.set_result(value)


def _has_nul(*texts: str) -> bool:
    return any("\x00" in text for text in texts)


def _row_to_stored(type_: str, id_: str, row: asyncpg.Record) -> Stored:
    return Stored(type_, id_, row["version"], row["op"], orjson.loads(row["body"]))


def _path_literal(path: tuple[str, ...]) -> str:
    """A strict-free (lax) SQL/JSON path naming the keys of ``path``, each quoted."""
    return json_path(key.replace("\\", "\\\\").replace('"', '\\"') for key in path)


def _number(text: str) -> str | None:
    """``text`` as a JSON path number literal when it is a finite JSON number, else None."""
    if not JSON_NUMBER.match(text):
        return None
    value = float(text)
    if not math.isfinite(value):
        return None
    return text if "." not in text and "e" not in text.lower() else repr(value)


def _filter_path(flt: Filter) -> str:
    """A JSON path that exists when the value at ``flt.path`` (or an item of the array there)
    equals ``flt.value`` as text, number or boolean. Lax mode unwraps arrays on the way; at the end
    it would unwrap an item that is itself an array too (``[["x"]]`` matching ``x``), which neither
    SQLite nor ``matches_filters`` (a SMART-restricted read) does: ``.type()`` is never unwrapped,
    so items that are arrays are left out. The GIN index still serves it."""
    choices = ["@ == " + orjson.dumps(flt.value).decode()]
    number = _number(flt.value)
    if number is not None:
        choices.append(f"@ == {number}")
    if flt.value in ("true", "false"):
        choices.append(f"@ == {flt.value}")
    return f'{_path_literal(flt.path)} ? (@.type() != "array" && ({" || ".join(choices)}))'


class _SearchSql(SearchSql):
    """PostgreSQL's spelling of a search: numbered placeholders, ids compared and sorted bytewise
    (``COLLATE "C"``, as SQLite does), JSON paths matched by ``@?`` and sorted the way SQLite sorts."""

    ID = 'id COLLATE "C"'

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return f"${len(self.params)}"

    def ids(self, ids: Sequence[str]) -> str:
        return f"id = ANY({self.bind(list(ids))}::text[])"

    def filter(self, flt: Filter) -> str:
        # `@?` with a path bound as a parameter can use the GIN (jsonb_path_ops) index: over the whole
        # body for resources, over the searched members for AuditEvents (the index's own expression).
        document = "body"
        if self.type_ == APPEND_ONLY and flt.path[0] not in migrations.AUDIT_UNINDEXED:
            document = migrations.AUDIT_SEARCH_POSTGRES
        return f"{document} @? {self.bind(_filter_path(flt))}::jsonpath"

    def comparison(self, comparison: Comparison) -> str | None:
        if _has_nul(comparison.value):
            # Stored text cannot contain U+0000, so only "not equal" can hold, and it always does.
            return "" if comparison.op == "ne" else None
        return super().comparison(comparison)

    def order_by_path(self, key: SortKey, direction: str) -> str:
        """Sort like SQLite does: missing and null first, then numbers (and booleans), then text."""
        nulls = "NULLS LAST" if key.descending else "NULLS FIRST"
        value = f"(body #> {self.bind(list(key.path))}::text[])"
        rank = (
            f"CASE coalesce(jsonb_typeof({value}), 'null') WHEN 'null' THEN NULL WHEN 'number' THEN 1 "
            "WHEN 'boolean' THEN 1 WHEN 'string' THEN 2 ELSE 3 END"
        )
        return f"{rank} {direction} {nulls}, {value} {direction} {nulls}"

    def instant(self, name: str) -> str:
        return migrations.postgres_instant_at(name)


class PostgresStore(Store):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._channel = ""
        self._writer: asyncio.Queue[_Write | None] | None = None
        self._writer_tasks: list[asyncio.Task[None]] = []
        # Reads of current versions waiting for a query, by key; the queries running now.
        self._reads: dict[tuple[str, str], list[asyncio.Future[Stored | None]]] = {}
        self._read_queries: set[asyncio.Task[None]] = set()
        self._closing = False
        # The change feed's connection while it listens (None while it connects or is down), the lock
        # its queries take, and the fence (``catch_up``) waiting to be sent, with the task sending them.
        self._feed_conn: asyncpg.Connection | None = None
        self._feed_lock = asyncio.Lock()
        self._next_fence: asyncio.Future[bool] | None = None
        self._fences: asyncio.Task[None] | None = None

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        try:
            pool = await asyncpg.create_pool(
                self.url,
                min_size=POOL_MIN,
                max_size=POOL_MAX,
                # A write is answered only once committed durably, whatever the server's default.
                server_settings={"synchronous_commit": "on", "application_name": "fhirbox"},
            )
        except asyncpg.InvalidCatalogNameError as exc:
            raise StoreUnavailable(
                f"no such PostgreSQL database ({exc}) at {redacted_url(self.url)}"
            ) from None
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            reason = str(exc) or type(exc).__name__
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {redacted_url(self.url)}: {reason}"
            ) from None
        try:
            async with pool.acquire() as conn:
                schema = await self._migrate(conn, create)
        except BaseException:
            await pool.close()
            raise
        # NOTIFY is database-wide; stores in other schemas of the same database must not hear us.
        self._channel = f"fhirbox:{schema}".encode()[:63].decode(errors="ignore")
        self._pool = pool
        self._closing = False
        self._writer = asyncio.Queue()
        loop = asyncio.get_running_loop()
        self._writer_tasks = [loop.create_task(self._write_loop(self._writer)) for _ in range(WRITERS)]

    async def close(self) -> None:
        self._closing = True  # reads asked from now on are refused; those asked before are answered
        await self.stop_change_feed()
        if self._fences is not None:  # the feed's connection is gone: each fence answers False
            await asyncio.gather(self._fences, return_exceptions=True)
            self._fences = None
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while self._read_queries:  # a query that ends may start the next batch of reads waiting
            left = deadline - time.monotonic()
            if left <= 0:
                for task in self._read_queries:
                    task.cancel()
                break
            await asyncio.wait(list(self._read_queries), timeout=left)
        writer, self._writer = self._writer, None
        if writer is not None:
            for _ in self._writer_tasks:
                writer.put_nowait(None)  # after every write already queued
            await asyncio.gather(*self._writer_tasks, return_exceptions=True)
            self._writer_tasks = []
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), CLOSE_TIMEOUT)
            except TimeoutError:
                log.warning("PostgreSQL connections still busy after %ss; terminating", CLOSE_TIMEOUT)
                pool.terminate()

    async def ping(self) -> bool:
        if self._pool is None:
            return False
        try:
            return bool(await asyncio.wait_for(self._pool.fetchval("SELECT 1"), PING_TIMEOUT) == 1)
        except (Exception, TimeoutError):
            return False

    async def _migrate(self, conn: asyncpg.Connection, create: bool) -> str:
        """Apply pending migrations; two processes starting together take turns. Returns the schema."""
        async with conn.transaction():
            schema = await conn.fetchval("SELECT current_schema()")
            if schema is None:
                raise StoreUnavailable(
                    "PostgreSQL has no schema to create tables in: the URL's search_path names no "
                    "existing schema"
                )
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('fhirbox.migrate:' || current_schema()))"
            )
            known = await conn.fetchval(
                "SELECT to_regclass(quote_ident(current_schema()) || '.schema_migrations')"
            )
            if known is None and not create:
                raise StoreUnavailable(
                    f"the PostgreSQL database at {redacted_url(self.url)} holds no fhirbox tables in schema "
                    f"{schema} (`fhirbox serve` creates them)"
                )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations "
                "(version INTEGER PRIMARY KEY, applied TEXT NOT NULL)"
            )
            done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
            await apply_migrations(
                migrations.POSTGRES,
                done,
                conn.execute,
                "INSERT INTO schema_migrations VALUES ($1, $2)",
                lambda version: log.info("applied PostgreSQL migration %d in schema %s", version, schema),
            )
        return str(schema)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError("store is not open")
        async with self._pool.acquire() as conn:
            yield conn

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, type_: str, id_: str) -> Stored | None:
        """The current version, read with the other reads waiting at the same time: while
        ``READ_QUERIES`` queries run, the reads that arrive meanwhile wait and form the next one (one
        round trip and one query for many GETs, as the writer commits many writes at once). Each read
        is answered by a query that began after it was asked, so it sees every write acknowledged
        before it."""
        if not (storable_text(type_) and storable_text(id_)):
            return None  # nothing stored has such an id (and it must not fail the reads batched with it)
        if self._pool is None or self._closing:
            raise RuntimeError("store is not open")
        if current_table(type_) != "resource":
            return await self._read_alone(type_, id_)
        future: asyncio.Future[Stored | None] = asyncio.get_running_loop().create_future()
        self._reads.setdefault((type_, id_), []).append(future)
        self._start_read_queries()
        return await future

    def _start_read_queries(self) -> None:
        while self._reads and len(self._read_queries) < READ_QUERIES:
            if len(self._reads) <= READ_BATCH:
                batch, self._reads = self._reads, {}
            else:
                keys = list(self._reads)[:READ_BATCH]
                batch = {key: self._reads.pop(key) for key in keys}
            task = asyncio.get_running_loop().create_task(self._read_batch(batch))
            self._read_queries.add(task)
            task.add_done_callback(self._read_query_done)

    def _read_query_done(self, task: asyncio.Task[None]) -> None:
        self._read_queries.discard(task)
        self._start_read_queries()

    async def _read_batch(self, batch: dict[tuple[str, str], list[asyncio.Future[Stored | None]]]) -> None:
        """One query for every read of ``batch``; each read gets a body of its own (callers may change
        what they read). If the query fails, each key is read alone, so a failure is only its own."""
        try:
            try:
                async with self._connection() as conn:
                    rows = await conn.fetch(_READ_MANY, [key[0] for key in batch], [key[1] for key in batch])
            except Exception:
                if len(batch) == 1:
                    raise
                await asyncio.gather(*(self._read_batch({key: futures}) for key, futures in batch.items()))
                return
            found = {(row["type"], row["id"]): row for row in rows}
            for (type_, id_), futures in batch.items():
                row = found.get((type_, id_))
                for future in _unanswered(futures):
                    future.set_result(None if row is None else _row_to_stored(type_, id_, row))
        except Exception as error:
            for futures in batch.values():
                for future in _unanswered(futures):
                    future.set_exception(error)
        finally:  # cancelled (the store closing under it): its reads are cancelled too
            for futures in batch.values():
                for future in _unanswered(futures):
                    future.cancel()

    async def _read_alone(self, type_: str, id_: str) -> Stored | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT version, op, body FROM {current_table(type_)} WHERE type = $1 AND id = $2",  # noqa: S608
                type_,
                id_,
            )
        return _row_to_stored(type_, id_, row) if row else None

    async def read_version(self, type_: str, id_: str, version: int) -> Stored | None:
        if _has_nul(type_, id_):
            return None
        async with self._connection() as conn:
            row = await conn.fetchrow(
                f"SELECT version, op, body FROM {history_table(type_)} "  # noqa: S608
                "WHERE type = $1 AND id = $2 AND version = $3",
                type_,
                id_,
                version,
            )
        return _row_to_stored(type_, id_, row) if row else None

    async def history(self, type_: str, id_: str, limit: int, offset: int) -> tuple[list[Stored], int]:
        if _has_nul(type_, id_):
            return [], 0
        table = history_table(type_)
        async with self._connection() as conn:
            total = await conn.fetchval(
                f"SELECT count(*) FROM {table} WHERE type = $1 AND id = $2",  # noqa: S608
                type_,
                id_,
            )
            rows = await conn.fetch(
                f"SELECT version, op, body FROM {table} WHERE type = $1 AND id = $2 "  # noqa: S608
                "ORDER BY version DESC LIMIT $3 OFFSET $4",
                type_,
                id_,
                limit,
                offset,
            )
        return [_row_to_stored(type_, id_, row) for row in rows], int(total)

    async def search(self, type_: str, query: SearchQuery) -> SearchResult:
        if _has_nul(type_, *query.ids, *(flt.value for flt in query.filters)):
            return SearchResult([], 0)  # nothing stored can contain U+0000
        sql = _SearchSql().statements(type_, query)
        if sql is None:
            return SearchResult([], 0)
        async with self._connection() as conn:
            total = int(await conn.fetchval(sql.count, *sql.count_params)) if query.total else None
            rows = await conn.fetch(sql.select, *sql.select_params)
        return SearchResult([orjson.loads(row["body"]) for row in rows], total)

    # -- writes ----------------------------------------------------------------------------------
    async def _mutate(
        self, type_: str, id_: str, mutation: Mutation, attach: Attach | None
    ) -> tuple[MutationResult, Sequence[NewResource | Appended]]:
        if _has_nul(type_, id_):
            raise UnstorableValue("PostgreSQL cannot store the character U+0000 in a resource or its id")
        if self._writer is None:
            raise RuntimeError("store is not open")
        future: asyncio.Future[tuple[MutationResult, Sequence[NewResource | Appended]]] = (
            asyncio.get_running_loop().create_future()
        )
        self._writer.put_nowait(_Write(type_, id_, mutation, attach, future))
        return await future

    async def _write_loop(self, writer: asyncio.Queue[_Write | None]) -> None:
        """A writer: take every write waiting (up to ``MAX_BATCH``), commit them together, repeat.

        While one batch commits, the writes that arrive meanwhile wait and form the next one: group
        commit, one fsync for many writes.
        """
        while True:
            first = await writer.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < MAX_BATCH and not writer.empty():
                nxt = writer.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            try:
                await self._commit_batch(batch)
            except Exception as error:  # the connection itself failed: every write of the batch fails
                for write in batch:
                    _fail(write, error, None)
            if stopping:
                return

    async def _commit_batch(self, batch: list[_Write]) -> None:
        """Commit ``batch`` (the writer's commit path): on a database error, each write is committed
        alone, so one bad write fails only itself."""
        try:
            started = time.perf_counter()
            await self._commit(batch)
            self._commit_observer(time.perf_counter() - started, len(batch))
        except _Uncommitted as uncommitted:
            for write in uncommitted.writes:
                await self._commit_batch([write])
        except _NUL_ERRORS as error:
            if len(batch) == 1:
                _fail(batch[0], UnstorableValue(_NUL_MESSAGE), error)
                return
            for write in batch:
                await self._commit_batch([write])
        except Exception as error:
            if len(batch) == 1:
                _fail(batch[0], error, None)
                return
            log.warning("PostgreSQL batch of %d writes failed (%s); retrying each alone", len(batch), error)
            for write in batch:
                await self._commit_batch([write])

    async def _commit(self, batch: list[_Write]) -> None:
        """Commit every write of ``batch``, then answer each: first without a transaction or locks
        (two round trips), then, for the writes another process changed meanwhile, under locks."""
        async with self._connection() as conn:
            raced = await self._commit_unlocked(conn, batch)
            if raced:
                try:
                    await self._commit_locked(conn, raced)
                except Exception as error:
                    # The rest of the batch is committed and answered: only these may be retried.
                    raise _Uncommitted(raced) from error

    async def _commit_unlocked(self, conn: asyncpg.Connection, batch: list[_Write]) -> list[_Write]:
        """Read the current rows and draw versions in one query, decide every write, and store them
        with one statement (its own transaction) that writes a resource only if its row is still the
        one read: an UPDATE re-checks the row's version once any concurrent writer has committed, an
        INSERT of a new resource yields to a row committed meanwhile. Every write is answered but
        those that lost (another process wrote the same resource in between): they are returned,
        nothing of them stored."""
        keys, types, ids = _keys_of(batch)
        current: dict[tuple[str, str], Stored | None] = {}
        drawn: list[int] = []
        for row in await conn.fetch(_NUMBER_AND_READ, types, ids, 2 * len(batch)):
            drawn = row["versions"]
            if row["type"] is not None:
                current[(row["type"], row["id"])] = _row_to_stored(row["type"], row["id"], row)
        read = {key: stored.version for key, stored in current.items() if stored is not None}
        decided = await _decide(batch, keys, current, _Versions(conn, drawn), now_iso())
        written, appended = decided.written, decided.appended
        lost: set[int] = set()
        if written or appended:
            latest = {(row.type, row.id): index for index, (row, _, _) in enumerate(written)}
            # Noted before the statement commits, which is when their notifications may arrive.
            self._note_own(row.version for row, _, _ in written)
            events = (
                [
                    [row.type for row, _ in appended],
                    [row.id for row, _ in appended],
                    [row.updated for row, _ in appended],
                    [row.text for row, _ in appended],
                    [guard for _, guard in appended],
                ]
                if appended
                else []
            )
            won = await conn.fetchval(
                _WRITE_UNLESS_RACED_AND_EVENTS if appended else _WRITE_UNLESS_RACED,
                [row.type for row, _, _ in written],
                [row.id for row, _, _ in written],
                [row.version for row, _, _ in written],
                [row.op for row, _, _ in written],
                decided.when,
                [orjson.dumps(row.body).decode() for row, _, _ in written],
                [latest[(row.type, row.id)] == index for index, (row, _, _) in enumerate(written)],
                [read.get((row.type, row.id)) for row, _, _ in written],
                [guard for _, guard, _ in written],
                [checked for _, _, checked in written],
                self._channel,
                *events,
            )
            lost = {guard for _, guard, checked in written if checked} - set(won)
            if lost:
                self._forget_own(row.version for row, guard, _ in written if guard in lost)
        _answer(
            [entry for entry, guard in zip(decided.settled, decided.guards, strict=True) if guard not in lost]
        )
        return [
            entry[0] for entry, guard in zip(decided.settled, decided.guards, strict=True) if guard in lost
        ]

    async def _commit_locked(self, conn: asyncpg.Connection, batch: list[_Write]) -> None:
        """Lock, read, decide and write every write of ``batch`` in one transaction, then answer each:
        the writes that lost a race in ``_commit_unlocked``.

        Five round trips whatever the batch size: BEGIN; the advisory locks (taken in one order, so two
        processes' batches cannot deadlock) and a block of versions taken under them, so the versions
        of one resource increase in the order its writes commit; the current rows; one statement
        writing every new version to both tables and notifying; COMMIT.
        """
        keys, types, ids = _keys_of(batch)
        async with conn.transaction():
            versions = _Versions(conn, await conn.fetchval(_LOCK_AND_NUMBER, types, ids, 2 * len(batch)))
            current: dict[tuple[str, str], Stored | None] = {
                (row["type"], row["id"]): _row_to_stored(row["type"], row["id"], row)
                for row in await conn.fetch(_READ_CURRENT, types, ids)
            }
            decided = await _decide(batch, keys, current, versions, now_iso())
            written = [row for row, _, _ in decided.written]
            appended = [row for row, _ in decided.appended]
            if written or appended:
                # Reported by ``mutate`` in this process: the notifications need not report them again
                # (noted before COMMIT, which is when they may arrive).
                self._note_own(row.version for row in written)
                latest = {(row.type, row.id): index for index, row in enumerate(written)}
                # The AuditEvents' columns, when there are any (then the statement that stores them).
                events = (
                    [
                        [row.type for row in appended],
                        [row.id for row in appended],
                        [row.updated for row in appended],
                        [row.text for row in appended],
                    ]
                    if appended
                    else []
                )
                await conn.execute(
                    _WRITE_VERSIONS_AND_EVENTS if appended else _WRITE_VERSIONS,
                    [row.type for row in written],
                    [row.id for row in written],
                    [row.version for row in written],
                    [row.op for row in written],
                    decided.when,
                    [orjson.dumps(row.body).decode() for row in written],
                    [latest[(row.type, row.id)] == index for index, row in enumerate(written)],
                    self._channel,
                    *events,
                )
        _answer(decided.settled)

    async def purge(self, type_: str, path: tuple[str, ...], below: float) -> int:
        async with self._connection() as conn, conn.transaction():
            count = await conn.fetchval(
                # The path is written into the SQL (keys are checked) so that the purge index serves it.
                "WITH doomed AS ("  # noqa: S608
                f" DELETE FROM resource WHERE type = $1 AND {migrations.postgres_number_at(path)} < $2"
                " RETURNING id"
                "), past AS ("
                " DELETE FROM history USING doomed WHERE history.type = $1 AND history.id = doomed.id"
                ") SELECT count(pg_notify($3, $1 || '/' || id || '/')) FROM doomed",
                type_,
                float(below),
                self._channel,
            )
        return int(count)

    async def purge_appended(self, before: str) -> int:
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM audit_event WHERE updated < $1", before)
        return int(status.split()[-1])

    async def remember_once(self, namespace: str, key: str, expires_at: float, *, now: float) -> bool:
        if _has_nul(namespace, key):
            raise UnstorableValue("PostgreSQL cannot store the character U+0000 in a key")
        async with self._connection() as conn:
            inserted = await conn.fetchval(
                # Insert, or take over a record that has expired; no row when a live record holds it.
                "INSERT INTO seen_once (namespace, key, expires_at) VALUES ($1, $2, $3) "
                "ON CONFLICT (namespace, key) DO UPDATE SET expires_at = excluded.expires_at "
                "WHERE seen_once.expires_at <= $4 RETURNING true",
                namespace,
                key,
                float(expires_at),
                float(now),
            )
        return inserted is True

    async def forget_expired(self, now: float) -> int:
        async with self._connection() as conn:
            status = await conn.execute("DELETE FROM seen_once WHERE expires_at < $1", float(now))
        return int(status.rsplit(" ", 1)[-1])

    # -- changes ---------------------------------------------------------------------------------
    def _on_notification(self, conn: object, pid: int, channel: str, payload: str) -> None:
        # ``type/id/version`` for a write, ``type/id/`` for a purge (``type/id`` from older servers).
        type_, _, rest = payload.partition("/")
        id_, separator, version = rest.rpartition("/")
        if not separator:
            id_, version = rest, ""
        if version:
            try:
                number = int(version)
            except ValueError:
                number = -1
            if self._written_here(number):
                return
        self._listeners.notify(type_, id_)

    async def _watch_changes(self, poll_interval: float) -> None:
        """Listen for other processes' commits; on reconnecting, report what may have been missed."""
        lost_at: datetime | None = None
        while True:
            conn: asyncpg.Connection | None = None
            good_until: datetime | None = None
            try:
                # Named after the channel so that an operator (or a test) can find this connection.
                name = f"feed:{self._channel}"[:63]
                conn = await _connect_to_the_end(self.url, name)
                dropped = asyncio.Event()
                conn.add_termination_listener(lambda _conn, dropped=dropped: dropped.set())
                await conn.add_listener(self._channel, self._on_notification)
                if lost_at is not None:
                    await self._replay(conn, lost_at)
                    lost_at = None
                good_until = datetime.now(UTC)
                self._feed_conn = conn
                while not conn.is_closed():
                    good_until = datetime.now(UTC)
                    try:
                        await asyncio.wait_for(dropped.wait(), LISTENER_CHECK_INTERVAL)
                    except TimeoutError:
                        # A silently dead connection never reports its end; ask it something.
                        await self._ask_feed(conn)
                    else:
                        break
                lost_at = good_until
                log.warning("change feed connection ended; reconnecting")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if lost_at is None:
                    lost_at = good_until or datetime.now(UTC)
                log.warning("change feed connection failed (%s); retrying", exc)
            finally:
                self._feed_conn = None
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(max(poll_interval, 0.2))

    # -- fences: every notification committed before a request is seen before its cache lookup -------
    # PostgreSQL signals a listening session when a transaction that notified it commits, before the
    # committing client gets its answer; the session sends what it was notified of before it answers
    # any later query. So once a query on the feed's connection, sent after a request arrived, is
    # answered, every Session closed before that request has been reported (asyncpg hands a
    # notification to ``_on_notification`` with call_soon, before the query's answer wakes anyone).
    # Requests arriving together share one query: one round trip for all of them.
    def catch_up(self) -> asyncio.Future[bool]:
        fence = self._next_fence
        if fence is None or fence.done():
            fence = self._next_fence = asyncio.get_running_loop().create_future()
            if self._fences is None or self._fences.done():
                self._fences = asyncio.get_running_loop().create_task(self._send_fences())
        return fence

    async def _send_fences(self) -> None:
        fence: asyncio.Future[bool] | None = None
        try:
            while (fence := self._next_fence) is not None:
                # Requests that come while this query is out wait for the next one: it is sent after them.
                self._next_fence = None
                caught_up = await self._fence()
                if not fence.done():
                    fence.set_result(caught_up)
        finally:  # cancelled (a shutdown): no request is left waiting; each reads from the database
            waiting, self._next_fence = self._next_fence, None
            for left in (fence, waiting):
                if left is not None and not left.done():
                    left.set_result(False)

    async def _fence(self) -> bool:
        conn = self._feed_conn
        if conn is None or conn.is_closed():
            return False
        try:
            await self._ask_feed(conn)
        except asyncio.CancelledError:
            raise
        except Exception:
            return False
        return conn is self._feed_conn

    async def _ask_feed(self, conn: asyncpg.Connection) -> None:
        """A round trip on the feed's connection (a ping, a fence): one at a time, at most
        ``PING_TIMEOUT`` seconds."""
        async with self._feed_lock:
            await asyncio.wait_for(conn.fetchval("SELECT 1"), PING_TIMEOUT)

    async def _replay(self, conn: asyncpg.Connection, lost_at: datetime) -> None:
        since = (lost_at - REPLAY_MARGIN).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        started = time.monotonic()
        rows = await conn.fetch("SELECT type, id FROM resource WHERE updated >= $1", since)
        for row in rows:
            self._listeners.notify(row["type"], row["id"])
        log.info(
            "change feed reconnected; reported %d recent writes in %.3fs",
            len(rows),
            time.monotonic() - started,
        )


async def _connect_to_the_end(url: str, application_name: str) -> asyncpg.Connection:
    """``asyncpg.connect``, not cancelled with its caller: cancelling asyncpg while it sets up the
    socket leaves behind a future holding "unexpected connection_lost() call" that nobody reads, and
    asyncio reports "Future exception was never retrieved" whenever it is collected (stopping the
    change feed mid-connect did exactly that). A cancelled caller waits for the connect a little
    (``FEED_CANCEL_WAIT``, so that stopping is not held up by a database that does not answer); the
    connect then finishes on its own and whatever it made is closed."""
    connecting = asyncio.ensure_future(
        asyncpg.connect(
            url, timeout=FEED_CONNECT_TIMEOUT, server_settings={"application_name": application_name}
        )
    )
    try:
        return await asyncio.shield(connecting)
    except asyncio.CancelledError:
        try:
            await asyncio.wait([connecting], timeout=FEED_CANCEL_WAIT)  # passes no cancel on
        finally:
            connecting.add_done_callback(_close_unwanted)  # even when cancelled again meanwhile
        raise


def _unanswered(futures: list[asyncio.Future[Stored | None]]) -> list[asyncio.Future[Stored | None]]:
    """The reads of ``futures`` still waiting (a reader may have given up)."""
    return [future for future in futures if not future.done()]


def _close_unwanted(connecting: asyncio.Future[asyncpg.Connection]) -> None:
    """Close the connection an abandoned connect made, or read its error (so none is reported)."""
    if not connecting.cancelled() and connecting.exception() is None:
        connecting.result().terminate()
