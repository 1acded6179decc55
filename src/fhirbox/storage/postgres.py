"""PostgreSQL backend: JSONB bodies, a sequence for versions, advisory locks and LISTEN/NOTIFY.

Every write is one transaction: an advisory lock on the resource's type and id serialises its writers
(a row lock cannot cover a row that does not exist yet), the version comes from a sequence taken
under that lock, and ``pg_notify`` in the same transaction tells every process sharing the database,
at commit, which resource changed. Tables are created unqualified, so a ``search_path`` in the URL
(``postgresql://.../db?search_path=tenant``) puts the whole store in that schema.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from fhirbox.storage import migrations
from fhirbox.storage.base import (
    JSON_NUMBER,
    Comparison,
    Filter,
    Mutation,
    MutationResult,
    SearchQuery,
    SearchResult,
    SearchSql,
    SortKey,
    Store,
    Stored,
    UnstorableValue,
    apply_migrations,
    json_path,
    next_version,
    now_iso,
)

log = logging.getLogger("fhirbox.storage.postgres")

POOL_MIN = 2
POOL_MAX = 10
PING_TIMEOUT = 2.0
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
    equals ``flt.value`` as text, number or boolean. Lax mode unwraps arrays on the way."""
    choices = ["@ == " + orjson.dumps(flt.value).decode()]
    number = _number(flt.value)
    if number is not None:
        choices.append(f"@ == {number}")
    if flt.value in ("true", "false"):
        choices.append(f"@ == {flt.value}")
    return f"{_path_literal(flt.path)} ? ({' || '.join(choices)})"


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
        # `@?` with a path bound as a parameter can use the GIN (jsonb_path_ops) index.
        return f"body @? {self.bind(_filter_path(flt))}::jsonpath"

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


class PostgresStore(Store):
    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url
        self._pool: asyncpg.Pool | None = None
        self._channel = ""

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self) -> None:
        pool = await asyncpg.create_pool(
            self.url,
            min_size=POOL_MIN,
            max_size=POOL_MAX,
            # A write is answered only once committed durably, whatever the server's default.
            server_settings={"synchronous_commit": "on", "application_name": "fhirbox"},
        )
        try:
            async with pool.acquire() as conn:
                schema = await self._migrate(conn)
        except BaseException:
            await pool.close()
            raise
        # NOTIFY is database-wide; stores in other schemas of the same database must not hear us.
        self._channel = f"fhirbox:{schema}".encode()[:63].decode(errors="ignore")
        self._pool = pool

    async def close(self) -> None:
        await self.stop_change_feed()
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

    @staticmethod
    async def _migrate(conn: asyncpg.Connection) -> str:
        """Apply pending migrations; two processes starting together take turns. Returns the schema."""
        async with conn.transaction():
            schema = await conn.fetchval("SELECT current_schema()")
            if schema is None:
                raise RuntimeError(
                    "PostgreSQL has no schema to create tables in: the URL's search_path names no "
                    "existing schema"
                )
            await conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('fhirbox.migrate:' || current_schema()))"
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
        if _has_nul(type_, id_):
            return None
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT version, op, body FROM resource WHERE type = $1 AND id = $2", type_, id_
            )
        return _row_to_stored(type_, id_, row) if row else None

    async def read_version(self, type_: str, id_: str, version: int) -> Stored | None:
        if _has_nul(type_, id_):
            return None
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT version, op, body FROM history WHERE type = $1 AND id = $2 AND version = $3",
                type_,
                id_,
                version,
            )
        return _row_to_stored(type_, id_, row) if row else None

    async def history(self, type_: str, id_: str, limit: int, offset: int) -> tuple[list[Stored], int]:
        if _has_nul(type_, id_):
            return [], 0
        async with self._connection() as conn:
            total = await conn.fetchval(
                "SELECT count(*) FROM history WHERE type = $1 AND id = $2", type_, id_
            )
            rows = await conn.fetch(
                "SELECT version, op, body FROM history WHERE type = $1 AND id = $2 "
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
            total = await conn.fetchval(sql.count, *sql.count_params)
            rows = await conn.fetch(sql.select, *sql.select_params)
        return SearchResult([orjson.loads(row["body"]) for row in rows], int(total))

    # -- writes ----------------------------------------------------------------------------------
    async def _mutate(self, type_: str, id_: str, mutation: Mutation) -> MutationResult:
        async with self._connection() as conn:
            try:
                async with conn.transaction():
                    return await self._apply(conn, type_, id_, mutation)
            except _NUL_ERRORS as error:
                raise UnstorableValue(
                    "PostgreSQL cannot store the character U+0000 in a resource or its id"
                ) from error

    async def _apply(
        self, conn: asyncpg.Connection, type_: str, id_: str, mutation: Mutation
    ) -> MutationResult:
        # The version is taken only once the lock is held (the subquery runs first), so versions of
        # one resource increase in the order its writes commit.
        version = await conn.fetchval(
            "SELECT nextval('resource_version_seq') "
            "FROM (SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2)) OFFSET 0) AS locked",
            type_,
            id_,
        )
        row = await conn.fetchrow(
            "SELECT version, op, body FROM resource WHERE type = $1 AND id = $2 FOR UPDATE", type_, id_
        )
        before = _row_to_stored(type_, id_, row) if row else None
        after = next_version(type_, id_, before, mutation(before), version, now_iso())
        if after is None:
            return MutationResult(before, before)
        await conn.execute(
            "WITH current AS ("
            " INSERT INTO resource (type, id, version, op, updated, body)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
            " ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, op = excluded.op,"
            " updated = excluded.updated, body = excluded.body"
            "), past AS ("
            " INSERT INTO history (type, id, version, op, updated, body)"
            " VALUES ($1, $2, $3, $4, $5, $6::jsonb)"
            ") SELECT pg_notify($7, $1 || '/' || $2)",
            type_,
            id_,
            version,
            after.op,
            after.body["meta"]["lastUpdated"],
            orjson.dumps(after.body).decode(),
            self._channel,
        )
        return MutationResult(before, after)

    async def purge(self, type_: str, path: tuple[str, ...], below: float) -> int:
        async with self._connection() as conn, conn.transaction():
            count = await conn.fetchval(
                # The path is written into the SQL (keys are checked) so that the purge index serves it.
                "WITH doomed AS ("  # noqa: S608
                f" DELETE FROM resource WHERE type = $1 AND {migrations.postgres_number_at(path)} < $2"
                " RETURNING id"
                "), past AS ("
                " DELETE FROM history USING doomed WHERE history.type = $1 AND history.id = doomed.id"
                ") SELECT count(pg_notify($3, $1 || '/' || id)) FROM doomed",
                type_,
                float(below),
                self._channel,
            )
        return int(count)

    # -- changes ---------------------------------------------------------------------------------
    def _on_notification(self, conn: object, pid: int, channel: str, payload: str) -> None:
        type_, _, id_ = payload.partition("/")
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
                conn = await asyncpg.connect(self.url, server_settings={"application_name": name})
                dropped = asyncio.Event()
                conn.add_termination_listener(lambda _conn, dropped=dropped: dropped.set())
                await conn.add_listener(self._channel, self._on_notification)
                if lost_at is not None:
                    await self._replay(conn, lost_at)
                    lost_at = None
                good_until = datetime.now(UTC)
                while not conn.is_closed():
                    good_until = datetime.now(UTC)
                    try:
                        await asyncio.wait_for(dropped.wait(), LISTENER_CHECK_INTERVAL)
                    except TimeoutError:
                        # A silently dead connection never reports its end; ask it something.
                        await asyncio.wait_for(conn.fetchval("SELECT 1"), PING_TIMEOUT)
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
                if conn is not None:
                    conn.terminate()
            await asyncio.sleep(max(poll_interval, 0.2))

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
