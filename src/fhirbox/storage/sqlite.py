"""SQLite backend: WAL mode, durable commits, one writer thread that commits concurrent writes together.

Reads run on the event loop's thread over their own connection (a point read costs a few
microseconds, less than a thread hop). Writes are queued to a single writer thread, which takes every
write waiting and commits them in one transaction with one fsync, and only then answers each caller:
group commit. Within a batch, the current versions are read with one query and the new versions
written with one statement per table, so a batch costs a handful of statements, not a handful per
write. A mutation function that raises has written nothing, so it fails alone; should the database
itself fail a batch, each write of it is retried alone, so one bad write never fails its neighbours.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import math
import os
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from fhirbox.storage import migrations
from fhirbox.storage.base import (
    JSON_NUMBER,
    Appended,
    Attach,
    Filter,
    Mutation,
    MutationResult,
    NewResource,
    QueryTooCostly,
    SearchQuery,
    SearchResult,
    SearchSql,
    SearchStatements,
    SortKey,
    Store,
    Stored,
    StoreUnavailable,
    apply_migrations,
    current_table,
    history_table,
    json_path,
    next_version,
    now_iso,
    split_added,
)

log = logging.getLogger("fhirbox.storage.sqlite")
T = TypeVar("T")
_MAX_BATCH = 512
# A batch of fewer than _LINGER_BATCH writes waits up to _LINGER seconds for more when the previous
# commit began less than _STREAMING seconds before: under a steady load of slow requests (RS256 tokens,
# ~2,000/s) commits of 2-4 writes cost more in page writes and syncs than the writes themselves; an
# idle server's write is committed at once.
_LINGER = 0.001
_LINGER_BATCH = 16
_STREAMING = 0.005
_KEYS_PER_SELECT = 400
# Searches run on these many threads, each stopped after SEARCH_BUDGET seconds of SQLite work (checked
# every _PROGRESS_STEPS virtual-machine instructions).
SEARCH_THREADS = 2
SEARCH_BUDGET = 5.0
_PROGRESS_STEPS = 20_000
# Rows written between WAL checkpoints (a write is a resource row and a history row, a token adds an
# AuditEvent). Checkpoints run beside the writer (``_Checkpointer``), which then copies what was committed
# meanwhile: the more rows apart, the longer that last copy holds up writes. put-patient p99 on a 2-CPU VM:
# 8.2-9.2 ms at 300 rows, 9.5-9.9 at 600, 12-13 at 1,200 or 2,400; throughput within the noise.
_CHECKPOINT_ROWS = 300
_CHECKPOINT = "PRAGMA wal_checkpoint(PASSIVE)"
_UPSERT = (
    "INSERT INTO resource (type, id, version, op, updated, body) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (type, id) DO UPDATE SET version = excluded.version, op = excluded.op, "
    "updated = excluded.updated, body = excluded.body"
)
_INSERT_HISTORY = "INSERT INTO history (type, id, version, op, updated, body) VALUES (?, ?, ?, ?, ?, ?)"
_APPEND = (
    "INSERT INTO audit_event (type, id, version, op, updated, body) VALUES (?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (type, id) DO UPDATE SET updated = excluded.updated, body = excluded.body"
)
# Insert, or take over a record that has expired; rowcount 0 when a live record holds the key.
_REMEMBER_ONCE = (
    "INSERT INTO seen_once (namespace, key, expires_at) VALUES (?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET expires_at = excluded.expires_at "
    "WHERE seen_once.expires_at <= ?"
)
Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


@dataclass(slots=True)
class _Write:
    """One ``mutate`` call waiting for the writer thread."""

    type_: str
    id_: str
    mutation: Mutation
    attach: Attach | None
    future: asyncio.Future[Any]


@dataclass(slots=True)
class _Work:
    """Any other write (a purge), run alone inside a savepoint."""

    work: Callable[[sqlite3.Connection], Any]
    future: asyncio.Future[Any]


_Job = _Write | _Work
# The schema version (migrations.SQLITE) that moved AuditEvents to ``audit_event``.
_AUDIT_TABLE_VERSION = 5
_INTEGER = re.compile(r"^-?[0-9]+\Z")


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


def _row_to_stored(type_: str, id_: str, row: tuple[Any, ...]) -> Stored:
    version, op, body = row
    return Stored(type_, id_, version, op, orjson.loads(body))


def _number(text: str) -> int | float | None:
    """``text`` as a number SQLite can bind when it is a finite JSON number, else None."""
    if not JSON_NUMBER.match(text):
        return None
    try:
        if _INTEGER.match(text):
            number = int(text)
            # SQLite reads an integer past 64 bits in JSON as a real, and cannot bind a bigger int.
            return number if -(2**63) <= number < 2**63 else float(number)
        value = float(text)
    except (OverflowError, ValueError):  # past a double, or more digits than Python converts
        return None
    return value if math.isfinite(value) else None


def _filter_sql(flt: Filter) -> tuple[str, list[Any]]:
    """An EXISTS condition: some value at ``flt.path`` equals ``flt.value`` as text, number or boolean.

    Arrays met on the way, and an array at the end, are looked into, as PostgreSQL's lax JSON paths
    do (``name.family`` finds ``{"name": [{"family": "Lee"}]}``); an object is never equal to a value.
    """
    sources: list[str] = []
    path_params: list[Any] = []
    parent = "stored.body"
    for depth, key in enumerate(flt.path):
        step = f"e{depth}"
        node = f"{parent} -> ?"
        # Each step lists the child's items when it is an array, else the child alone; below the
        # first step only objects have children (the CASE keeps json_type from parsing a scalar).
        listing = f"CASE json_type({parent}, ?) WHEN 'array' THEN {node} ELSE '[' || ({node}) || ']' END"
        if depth:
            listing = f"CASE WHEN e{depth - 1}.type = 'object' THEN {listing} END"
        sources.append(f"json_each({listing}) AS {step}")
        path_params.extend([json_path((key,))] * 3)
        parent = f"{step}.value"
    last = f"e{len(flt.path) - 1}"
    conditions = [f"({last}.type = 'text' AND {last}.value = ?)"]
    params: list[Any] = [flt.value]
    number = _number(flt.value)
    if number is not None:
        conditions.append(f"({last}.type IN ('integer', 'real') AND {last}.value = ?)")
        params.append(number)
    if flt.value in ("true", "false"):
        conditions.append(f"{last}.type = '{flt.value}'")
    # Only fixed SQL fragments are joined here; every value is a bound parameter.
    sql = f"EXISTS (SELECT 1 FROM {', '.join(sources)} WHERE {' OR '.join(conditions)})"  # noqa: S608
    if len(conditions) == 1:
        # A text value: it can only be there if the stored JSON text holds it as a JSON string, a
        # substring test that rules out most rows at a fraction of the walk's cost; and where no array
        # is on the path, one json_extract finds it without the walk.
        quoted = orjson.dumps(flt.value).decode()
        fast = f"(instr(stored.body, ?) > 0 AND (json_extract(stored.body, ?) = ? OR {sql}))"
        return fast, [quoted, json_path(flt.path), flt.value, *path_params, *params]
    return sql, [*path_params, *params]


class _SearchSql(SearchSql):
    """SQLite's spelling of a search: positional placeholders."""

    OPERATORS = {**SearchSql.OPERATORS, "ne": "!="}

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def ids(self, ids: Sequence[str]) -> str:
        self.params.extend(ids)
        return f"id IN ({', '.join('?' for _ in ids)})"

    def filter(self, flt: Filter) -> str:
        sql, params = _filter_sql(flt)
        self.params.extend(params)
        return sql

    def order_by_path(self, key: SortKey, direction: str) -> str:
        return f"json_extract(body, {self.bind(json_path(key.path))}) {direction}"

    def instant(self, name: str) -> str:
        return migrations.sqlite_instant_at(name)


class SQLiteStore(Store):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._reader: sqlite3.Connection | None = None
        self._searches: _Searches | None = None
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._error: BaseException = RuntimeError("write failed")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        # The change feed's position: the highest version reported, and the file's change counter then.
        self._seen_version: int | None = None
        self._data_version = 0
        # Whether ``catch_up`` has checked in this turn of the event loop.
        self._caught_up = False

    @classmethod
    def from_url(cls, url: str) -> SQLiteStore:
        path = url.removeprefix("sqlite:").removeprefix("//")
        if url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")  # sqlite:////abs.db is absolute
        elif path.startswith("/"):
            path = path[1:]  # sqlite:///rel.db is relative
        if not path:
            raise ValueError("SQLite URL names no file: use sqlite:///path/to/file.db")
        return cls(path)

    # -- lifecycle -------------------------------------------------------------------------------
    async def open(self, *, create: bool = True) -> None:
        try:
            if self.path != ":memory:" and not create and not Path(self.path).is_file():
                raise StoreUnavailable(f"no SQLite database at {self.path} (`fhirbox serve` creates it)")
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            writer = _connect(self.path)
        except (OSError, sqlite3.Error) as exc:
            raise self._cannot_open(exc) from None
        self._loop = asyncio.get_running_loop()
        try:
            await self._migrate(writer, create)
        except BaseException:
            writer.close()
            raise
        checkpoints: _Checkpointer | None = None
        try:
            self._reader = _connect(self.path)
            self._data_version = self._reader.execute("PRAGMA data_version").fetchone()[0]
            self._seen_version = self._reader.execute(
                "SELECT coalesce(max(version), 0) FROM resource"
            ).fetchone()[0]
            checkpoints = _Checkpointer(self.path)
            thread = threading.Thread(
                target=self._write_loop, args=(writer, checkpoints), name="fhirbox-writer", daemon=True
            )
            thread.start()  # RuntimeError when the process may not start another thread
        except (OSError, sqlite3.Error, RuntimeError) as exc:
            if checkpoints is not None:
                checkpoints.stop()
            writer.close()
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            raise self._cannot_open(exc) from None
        self._thread = thread
        self._searches = _Searches(self.path)

    def _cannot_open(self, error: BaseException) -> StoreUnavailable:
        return StoreUnavailable(f"cannot open SQLite database {self.path}: {error}")

    async def close(self) -> None:
        await self.stop_change_feed()
        searches, self._searches = self._searches, None
        if searches is not None:
            await asyncio.get_running_loop().run_in_executor(None, searches.close)
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    async def ping(self) -> bool:
        try:
            self._conn.execute("SELECT 1").fetchone()
        except (sqlite3.Error, RuntimeError):
            return False
        return self._thread is not None and self._thread.is_alive()

    @property
    def _conn(self) -> sqlite3.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    async def _migrate(self, conn: sqlite3.Connection, create: bool) -> None:
        async def execute(statement: str, *params: Any) -> None:
            conn.execute(statement, params)

        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:  # not a database, locked for longer than the timeout
            raise self._cannot_open(exc) from None
        try:
            known = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
            ).fetchone()
            if known is None and not create:
                raise StoreUnavailable(
                    f"the SQLite database {self.path} holds no fhirbox tables (`fhirbox serve` creates them)"
                )
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied TEXT)"
            )
            done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
            await apply_migrations(
                migrations.SQLITE,
                done,
                execute,
                "INSERT INTO schema_migrations VALUES (?, ?)",
                lambda version: log.info("applied SQLite migration %d", version),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # -- reads -----------------------------------------------------------------------------------
    async def read(self, type_: str, id_: str) -> Stored | None:
        try:
            row = self._conn.execute(
                f"SELECT version, op, body FROM {current_table(type_)} WHERE type = ? AND id = ?",  # noqa: S608
                (type_, id_),
            ).fetchone()
        except UnicodeEncodeError:  # a lone surrogate: no stored id has one
            return None
        return _row_to_stored(type_, id_, row) if row else None

    async def read_version(self, type_: str, id_: str, version: int) -> Stored | None:
        row = self._conn.execute(
            f"SELECT version, op, body FROM {history_table(type_)} "  # noqa: S608
            "WHERE type = ? AND id = ? AND version = ?",
            (type_, id_, version),
        ).fetchone()
        return _row_to_stored(type_, id_, row) if row else None

    async def history(self, type_: str, id_: str, limit: int, offset: int) -> tuple[list[Stored], int]:
        conn, table = self._conn, history_table(type_)
        total = conn.execute(
            f"SELECT count(*) FROM {table} WHERE type = ? AND id = ?",  # noqa: S608
            (type_, id_),
        ).fetchone()[0]
        rows = conn.execute(
            f"SELECT version, op, body FROM {table} WHERE type = ? AND id = ? "  # noqa: S608
            "ORDER BY version DESC LIMIT ? OFFSET ?",
            (type_, id_, limit, offset),
        ).fetchall()
        return [_row_to_stored(type_, id_, row) for row in rows], total

    async def search(self, type_: str, query: SearchQuery) -> SearchResult:
        """Run on a search thread with a connection of its own, never on the event loop: a search's
        cost grows with the rows it scans times its filters (each a JSON walk), and one of 99 filters
        over 4,000 AuditEvents took 3 s, every other request waiting. SQLite is interrupted past
        ``SEARCH_BUDGET`` seconds (``QueryTooCostly``)."""
        sql = _SearchSql().statements(type_, query)
        if sql is None:
            return SearchResult([], 0)
        if self._searches is None:
            raise RuntimeError("store is not open")
        return await asyncio.get_running_loop().run_in_executor(
            self._searches.pool, self._searches.run, sql, query.total
        )

    # -- writes ----------------------------------------------------------------------------------
    def _future(self) -> asyncio.Future[Any]:
        if self._thread is None or self._loop is None:
            raise RuntimeError("store is not open")
        return self._loop.create_future()

    async def _mutate(
        self, type_: str, id_: str, mutation: Mutation, attach: Attach | None
    ) -> tuple[MutationResult, Sequence[NewResource | Appended]]:
        future = self._future()
        self._queue.put(_Write(type_, id_, mutation, attach, future))
        result: tuple[MutationResult, Sequence[NewResource | Appended]] = await future
        return result

    async def purge(self, type_: str, path: tuple[str, ...], below: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            # The path is written into the SQL (keys are checked) so that the purge index serves it.
            doomed = conn.execute(
                f"SELECT id FROM resource WHERE type = ? AND {migrations.sqlite_number_at(path)} < ?",  # noqa: S608
                (type_, below),
            ).fetchall()
            for (id_,) in doomed:
                conn.execute("DELETE FROM resource WHERE type = ? AND id = ?", (type_, id_))
                conn.execute("DELETE FROM history WHERE type = ? AND id = ?", (type_, id_))
            return len(doomed)

        future = self._future()
        self._queue.put(_Work(work, future))
        purged: int = await future
        return purged

    async def purge_appended(self, before: str) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM audit_event WHERE updated < ?", (before,)).rowcount

        future = self._future()
        self._queue.put(_Work(work, future))
        purged: int = await future
        return purged

    async def remember_once(self, namespace: str, key: str, expires_at: float, *, now: float) -> bool:
        def work(conn: sqlite3.Connection) -> bool:
            cursor = conn.execute(_REMEMBER_ONCE, (namespace, key, float(expires_at), float(now)))
            return cursor.rowcount == 1

        future = self._future()
        self._queue.put(_Work(work, future))
        remembered: bool = await future
        return remembered

    async def forget_expired(self, now: float) -> int:
        def work(conn: sqlite3.Connection) -> int:
            return conn.execute("DELETE FROM seen_once WHERE expires_at < ?", (float(now),)).rowcount

        future = self._future()
        self._queue.put(_Work(work, future))
        forgotten: int = await future
        return forgotten

    def _write_loop(self, conn: sqlite3.Connection, checkpoints: _Checkpointer) -> None:
        """The writer thread: ``_write_batches`` until the store closes, then stop the checkpointer."""
        try:
            self._write_batches(conn, checkpoints)
        finally:
            checkpoints.stop()
            conn.close()

    def _write_batches(self, conn: sqlite3.Connection, checkpoints: _Checkpointer) -> None:
        """Take every waiting write, apply, commit once, then answer them all; until told to stop."""
        stopping = False
        never_preempt_the_event_loop()
        conn.execute("PRAGMA wal_autocheckpoint = 0")
        checkpointed = conn.total_changes
        last_commit = 0.0
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            # Writes arriving in a steady stream (the last commit was moments ago) but few at a time
            # wait up to _LINGER for more: every commit writes its pages and syncs whatever its size.
            linger_until = time.perf_counter() + _LINGER
            if linger_until - last_commit > _STREAMING:
                linger_until = 0.0
            while len(batch) < _MAX_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    left = linger_until - time.perf_counter()
                    if len(batch) >= _LINGER_BATCH or left <= 0:
                        break
                    try:
                        nxt = self._queue.get(timeout=left)
                    except queue.Empty:
                        break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            started = last_commit = time.perf_counter()
            outcomes = self._commit(conn, batch)
            self._commit_observer(time.perf_counter() - started, len(batch))
            if outcomes is None:
                # The database failed the batch as a whole: retry each write alone.
                outcomes = []
                for job in batch:
                    alone = self._commit(conn, [job])
                    outcomes.extend(alone if alone is not None else [(job.future, None, self._error)])
            assert self._loop is not None
            self._loop.call_soon_threadsafe(_settle, outcomes)
            # Checkpoints run after the batch is answered, never inside a COMMIT (SQLite's autocheckpoint
            # is off on this connection). The checkpointer's thread copies the log while writes go on;
            # then this thread copies what was committed meanwhile (a fraction of the log), so that the
            # next write starts the log over instead of growing it.
            if checkpoints.take_finished():
                _checkpoint(conn)
            elif not stopping and rows_changed_since(checkpointed, conn.total_changes) >= _CHECKPOINT_ROWS:
                if checkpoints.request():
                    checkpointed = conn.total_changes

    def _commit(self, conn: sqlite3.Connection, batch: list[_Job]) -> list[Outcome] | None:
        """Apply ``batch`` in one transaction; None (and ``self._error``) when the database failed it."""
        try:
            conn.execute("BEGIN IMMEDIATE")
            outcomes: list[Outcome] = []
            writes: list[_Write] = []
            versions: list[int] = []
            for job in batch:
                if isinstance(job, _Write):
                    writes.append(job)
                    continue
                _apply_writes(conn, writes, outcomes, versions)
                writes = []
                outcomes.append(_run_work(conn, job))
            _apply_writes(conn, writes, outcomes, versions)
            conn.execute("COMMIT")
            # Reported by ``mutate`` in this process: the change feed need not report them again.
            self._note_own(versions)
        except Exception as exc:
            log.exception("SQLite write transaction failed")
            self._error = exc
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            return None
        return outcomes

    # -- changes ---------------------------------------------------------------------------------
    # Other processes' writes are found by their versions: every write since the highest version seen.
    # ``PRAGMA data_version`` (read from shared memory, no file access) changes whenever another
    # connection, in this process or another, has committed: ``catch_up`` polls only then, so a cache
    # consulted right after it is as fresh as the database was when the request began.
    async def _watch_changes(self, poll_interval: float) -> None:
        while True:
            await asyncio.sleep(poll_interval)
            self._poll_changes()

    def catch_up(self) -> None:
        # Once per turn of the event loop: every request a turn runs was received before its first
        # check, so that one check is as fresh as each of them needs.
        if self._caught_up or self._seen_version is None or self._reader is None:
            return
        self._caught_up = True
        assert self._loop is not None
        self._loop.call_soon(self._turn_ended)
        if self._reader.execute("PRAGMA data_version").fetchone()[0] != self._data_version:
            self._poll_changes()

    def _turn_ended(self) -> None:
        self._caught_up = False

    def _poll_changes(self) -> None:
        assert self._seen_version is not None
        try:
            # Read before the rows: a commit between the two is then seen again next time, never missed.
            self._data_version = self._conn.execute("PRAGMA data_version").fetchone()[0]
            rows = self._conn.execute(
                "SELECT type, id, version FROM resource WHERE version > ? ORDER BY version",
                (self._seen_version,),
            ).fetchall()
        except sqlite3.Error:
            log.exception("polling for changes failed")
            return
        for type_, id_, version in rows:
            if not self._written_here(version):
                self._listeners.notify(type_, id_)
            self._seen_version = max(self._seen_version, version)
        own = self._own_versions
        if own:
            # Versions commit in order: one of ours at or below the highest seen that the query did not
            # return was overwritten since, and its successor was reported.
            seen = self._seen_version
            for version in [v for v in list(own) if v <= seen]:  # one copy, under the GIL
                own.discard(version)


def rows_changed_since(before: int, now: int) -> int:
    """Rows a connection changed between two readings of its ``total_changes``: SQLite counts them in
    a 32-bit int, which wraps to negative after 2**31 changes (days of writes at full speed); a plain
    difference then stayed negative, and no checkpoint was asked for again while the log grew."""
    return (now - before) % 2**32


def _checkpoint(conn: sqlite3.Connection) -> None:
    try:
        conn.execute(_CHECKPOINT).fetchall()
    except Exception:  # the thread running it (the writer, the checkpointer) must go on
        log.exception("WAL checkpoint failed")


class _Searches:
    """The threads searches run on (``SEARCH_THREADS``), each with its own connection, opened on its
    first search; a search running longer than ``SEARCH_BUDGET`` seconds is interrupted."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pool = concurrent.futures.ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="fhirbox-search")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()

    def run(self, sql: SearchStatements, with_total: bool) -> SearchResult:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _connect(self.path)
            with self._lock:
                self._connections.append(conn)
        deadline = time.monotonic() + SEARCH_BUDGET
        conn.set_progress_handler(lambda: time.monotonic() > deadline, _PROGRESS_STEPS)
        try:
            total = conn.execute(sql.count, sql.count_params).fetchone()[0] if with_total else None
            rows = conn.execute(sql.select, sql.select_params).fetchall()
        except sqlite3.OperationalError as error:
            if "interrupted" not in str(error):
                raise
            raise QueryTooCostly(
                f"The search was stopped after {SEARCH_BUDGET:g} s: narrow it (fewer or shorter filters,"
                " _id, or a smaller _count)"
            ) from None
        finally:
            conn.set_progress_handler(None, 0)
        return SearchResult([orjson.loads(row[0]) for row in rows], total)

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()


class _Checkpointer:
    """Copies the write-ahead log into the database file on a thread and connection of its own.

    A checkpoint copies every page the log holds and syncs the database file: ~9 ms for 600 rows on a
    2-CPU VM. Run by the writer, every write arriving meanwhile waited for it (put-patient p99 ~13 ms,
    p50 ~6). Here writes commit while it runs. Only the writer can let the log start over (its next
    write does, when nothing in the log is left to copy), so once a checkpoint here has finished the
    writer copies the rest itself: what was committed meanwhile. Without that last copy the log would
    grow for as long as writes go on."""

    def __init__(self, path: str) -> None:
        self._conn = _connect(path)
        # ``_requested`` is the writer's alone: set when it asks, cleared when it takes the result.
        self._requested = False
        self._finished = threading.Event()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="fhirbox-checkpoint", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:
            self._conn.close()
            raise

    def request(self) -> bool:
        """Start a checkpoint unless the last one is not yet taken (then False: ask again later)."""
        if self._requested:
            return False
        self._requested = True
        self._wake.set()
        return True

    def take_finished(self) -> bool:
        """Whether the checkpoint requested has finished; True once per checkpoint."""
        if not self._finished.is_set():
            return False
        self._finished.clear()
        self._requested = False
        return True

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._conn.close()

    def _run(self) -> None:
        never_preempt_the_event_loop()
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._stopping:
                return
            _checkpoint(self._conn)
            self._finished.set()


def never_preempt_the_event_loop() -> None:
    """Run the calling thread (the writer, the checkpointer) under Linux's ``SCHED_BATCH`` policy: the
    same share of the CPU as before, but waking up never preempts the thread that is running.

    The writer and the event loop share one GIL. Signing a JWT lets go of the GIL (``cryptography``
    releases it); a writer woken by a new write then took the CPU from the event loop mid-signature,
    and each took the GIL back from the other: ~3.4 context switches per RS256 token, 1.7 per ES256
    one, and ~20% more CPU per token (docs/decisions.md). Under ``SCHED_BATCH`` the writer waits for the
    event loop's thread to block or use up its time slice (0.25 switches per token). Elsewhere (not
    Linux, or the call refused), nothing changes."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    try:
        os.sched_setscheduler(threading.get_native_id(), policy, os.sched_param(0))
    except OSError:
        log.debug("SCHED_BATCH refused for the writer or checkpoint thread", exc_info=True)


def _apply_writes(
    conn: sqlite3.Connection, writes: list[_Write], outcomes: list[Outcome], versions: list[int]
) -> None:
    """Decide and write ``writes`` in order: one read of their current versions, one insert per table;
    the versions written are added to ``versions``."""
    if not writes:
        return
    ids_by_type: dict[str, dict[str, None]] = {}
    for write in writes:
        ids_by_type.setdefault(write.type_, {})[write.id_] = None
    current: dict[tuple[str, str], Stored | None] = {}
    for type_, ids in ids_by_type.items():
        id_list = list(ids)
        for start in range(0, len(id_list), _KEYS_PER_SELECT):
            chunk = id_list[start : start + _KEYS_PER_SELECT]
            placeholders = ", ".join("?" for _ in chunk)
            rows = conn.execute(
                f"SELECT id, version, op, body FROM resource WHERE type = ? AND id IN ({placeholders})",  # noqa: S608
                [type_, *chunk],
            )
            for id_, *rest in rows:
                current[(type_, id_)] = _row_to_stored(type_, id_, tuple(rest))
    version: int = conn.execute("SELECT value FROM sequence WHERE name = 'version'").fetchone()[0]
    when = now_iso()
    rows_out: list[tuple[str, str, int, str, str, str]] = []
    appended: list[Appended] = []
    for write in writes:
        key = (write.type_, write.id_)
        before = current.get(key)
        try:
            after = next_version(write.type_, write.id_, before, write.mutation(before), version + 1, when)
            result = MutationResult(before, before if after is None else after)
            added = write.attach(result) if write.attach is not None else ()
            created, appending = split_added(added)
        except Exception as exc:
            outcomes.append((write.future, None, exc))
            continue
        if after is not None:
            version += 1
            current[key] = after
            rows_out.append(
                (write.type_, write.id_, version, after.op, when, orjson.dumps(after.body).decode())
            )
        appended.extend(appending)
        for resource in created:
            version += 1
            new = next_version(resource.type, resource.id, None, dict(resource.body), version, when)
            assert new is not None
            current[(resource.type, resource.id)] = new
            rows_out.append((new.type, new.id, version, new.op, when, orjson.dumps(new.body).decode()))
        outcomes.append((write.future, (result, added), None))
    if rows_out:
        versions.extend(row[2] for row in rows_out)
        conn.executemany(_UPSERT, rows_out)
        conn.executemany(_INSERT_HISTORY, rows_out)
        conn.execute("UPDATE sequence SET value = ? WHERE name = 'version'", (version,))
    if appended:
        conn.executemany(_APPEND, appended)


def _run_work(conn: sqlite3.Connection, job: _Work) -> Outcome:
    conn.execute("SAVEPOINT work")
    try:
        result = job.work(conn)
    except Exception as exc:
        conn.execute("ROLLBACK TO work")
        conn.execute("RELEASE work")
        return (job.future, None, exc)
    conn.execute("RELEASE work")
    return (job.future, result, None)


def _settle(outcomes: list[Outcome]) -> None:
    for future, result, error in outcomes:
        if future.cancelled():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


@dataclass(frozen=True, slots=True)
class BackupSummary:
    resources: int
    schema_version: int
    size: int


def backup_database(source: str, destination: str) -> BackupSummary:
    """Copy the SQLite database ``source`` to the new file ``destination`` while servers write to it.

    sqlite3's online backup API copies every page in one step, inside one read transaction: the copy is
    the database as of one commit, with every write acknowledged before it began (WAL readers and the
    writer do not block each other, so the servers keep writing). The copy is made beside
    ``destination``, switched out of WAL mode (one self-contained file), checked with
    ``PRAGMA integrity_check``, synced, and only then renamed to ``destination``. ``ValueError`` when
    ``source`` is not a fhirbox database, ``destination`` exists, or its directory is missing or not
    writable (it is never created).
    """
    if not Path(source).is_file():
        raise ValueError(f"no SQLite database at {source}")
    target = Path(destination)
    if target.exists():
        raise ValueError(f"{destination} exists: give a new file name")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    # Created here rather than by sqlite3, whose "unable to open database file" would read as if the
    # source were at fault: the OS's reason names what is wrong with the destination's directory.
    try:
        os.close(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
    except OSError as exc:
        raise ValueError(f"cannot write {destination}: {_unwritable(target.parent, exc)}") from None
    try:
        try:
            summary = _copy(source, str(partial))
        except sqlite3.Error as exc:
            raise ValueError(f"cannot copy {source}: {exc}") from None
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.link(partial, target)  # fails, instead of replacing, if the file appeared meanwhile
        directory = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        return summary
    finally:
        partial.unlink(missing_ok=True)


def _unwritable(directory: Path, exc: OSError) -> str:
    """Why no file can be created in ``directory``, as the user can act on it."""
    if isinstance(exc, FileNotFoundError):
        return f"directory {directory} does not exist (create it first)"
    if isinstance(exc, NotADirectoryError):
        return f"{directory} is not a directory"
    if isinstance(exc, PermissionError):
        return f"directory {directory} is not writable (permission denied)"
    if exc.errno == errno.EROFS:
        return f"directory {directory} is on a read-only file system"
    return f"cannot create a file in {directory}: {exc.strerror or exc}"


def _copy(source: str, destination: str) -> BackupSummary:
    src = sqlite3.connect(source, timeout=10.0)
    try:
        src.execute("PRAGMA busy_timeout = 10000")
        dst = sqlite3.connect(destination)
        try:
            src.backup(dst)  # pages=-1: every page in one step, one snapshot
            dst.execute("PRAGMA journal_mode = DELETE")
            problems = [row[0] for row in dst.execute("PRAGMA integrity_check")]
            if problems != ["ok"]:
                raise ValueError(f"the copy fails integrity_check: {'; '.join(problems[:3])}")
            try:
                version = dst.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
                resources = dst.execute("SELECT count(*) FROM resource WHERE op != 'delete'").fetchone()[0]
                if (version or 0) >= _AUDIT_TABLE_VERSION:  # AuditEvents are resources too
                    resources += dst.execute("SELECT count(*) FROM audit_event").fetchone()[0]
            except sqlite3.OperationalError:
                raise ValueError(f"{source} is not a fhirbox database (no fhirbox tables)") from None
        finally:
            dst.close()
    finally:
        src.close()
    return BackupSummary(int(resources), int(version or 0), os.path.getsize(destination))
