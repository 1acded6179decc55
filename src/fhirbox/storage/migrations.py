"""Versioned schema migrations, one list per backend. Append new steps; never edit applied ones."""

from __future__ import annotations

from fhirbox.storage.base import INSTANT_FIELDS, PATH_KEY, Steps, json_path


def sqlite_number_at(path: tuple[str, ...]) -> str:
    """SQL for the value at a JSON path (fixed keys only), written the way index definitions are."""
    _check(path)
    return "json_extract(body, '" + json_path(path) + "')"


def postgres_number_at(path: tuple[str, ...]) -> str:
    """SQL for the number at a JSON path (NULL when it is not a number), as the index defines it."""
    _check(path)
    pointer = "{" + ",".join(path) + "}"
    return f"(CASE WHEN jsonb_typeof(body #> '{pointer}') = 'number' THEN (body #>> '{pointer}')::float8 END)"


def sqlite_instant_at(name: str) -> str:
    """SQL for the text of a top-level instant field (``INSTANT_FIELDS``), as its index defines it."""
    return sqlite_number_at((name,))


def postgres_instant_at(name: str) -> str:
    """SQL for the text of a top-level instant field, compared bytewise, as its index defines it."""
    _check((name,))
    return f"((body ->> '{name}') COLLATE \"C\")"


def _check(path: tuple[str, ...]) -> None:
    if not path or not all(PATH_KEY.match(key) for key in path):
        raise ValueError(f"invalid JSON path {path!r}: keys are letters, digits, _ and -")


# What PostgreSQL's AuditEvent index leaves out: members no AuditEvent search reads through it (ids and
# instants have columns; the rest are a few constants). Over the whole body, the index cost every
# audited token ~10%; these are about half its entries. The search (postgres._SearchSql.filter) uses
# the same expression for every other path, and the body itself for these.
AUDIT_UNINDEXED = ("resourceType", "id", "meta", "recorded", "action", "outcome", "outcomeDesc", "source")
AUDIT_SEARCH_POSTGRES = f"(body - '{{{','.join(AUDIT_UNINDEXED)}}}'::text[])"

# The field the background purge of expired resources reads (see Store.purge).
PURGE_AFTER = ("purge_after",)
PURGE_AFTER_SQLITE = sqlite_number_at(PURGE_AFTER)
PURGE_AFTER_POSTGRES = postgres_number_at(PURGE_AFTER)

SQLITE: Steps = (
    (
        1,
        (
            """CREATE TABLE resource (
                type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, op TEXT NOT NULL,
                updated TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (type, id)) WITHOUT ROWID""",
            "CREATE INDEX resource_type_updated ON resource (type, updated)",
            "CREATE INDEX resource_version ON resource (version)",
            """CREATE TABLE history (
                type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, op TEXT NOT NULL,
                updated TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (type, id, version)) WITHOUT ROWID""",
            "CREATE TABLE sequence (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            "INSERT INTO sequence (name, value) VALUES ('version', 0)",
        ),
    ),
    (
        2,
        # The background purge looks for resources whose `purge_after` has passed (expired Sessions):
        # without this index every run reads every resource of the type.
        (
            f"CREATE INDEX resource_purge_after ON resource (type, {PURGE_AFTER_SQLITE}) "
            f"WHERE {PURGE_AFTER_SQLITE} IS NOT NULL",
        ),
    ),
    (
        3,
        # Searches compare instants such as AuditEvent.recorded with gt/lt.
        tuple(
            f"CREATE INDEX resource_{name} ON resource (type, {sqlite_instant_at(name)}) "
            f"WHERE {sqlite_instant_at(name)} IS NOT NULL"
            for name in INSTANT_FIELDS
        ),
    ),
    (
        4,
        # Keys that may be used once until they expire (Store.remember_once), e.g. the jti of a client
        # assertion: shared by every process on the database, and kept across restarts.
        (
            """CREATE TABLE seen_once (
                namespace TEXT NOT NULL, key TEXT NOT NULL, expires_at REAL NOT NULL,
                PRIMARY KEY (namespace, key)) WITHOUT ROWID""",
            "CREATE INDEX seen_once_expires_at ON seen_once (expires_at)",
        ),
    ),
    (
        5,
        # AuditEvents, append-only, apart from other resources (see storage.base.APPEND_ONLY): stored
        # under their ``recorded`` instant, with no history rows and one index besides the key.
        (
            """CREATE TABLE audit_event (
                type TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, op TEXT NOT NULL,
                updated TEXT NOT NULL, body TEXT NOT NULL, PRIMARY KEY (type, id)) WITHOUT ROWID""",
            "CREATE INDEX audit_event_updated ON audit_event (type, updated)",
            "INSERT INTO audit_event (type, id, version, op, updated, body) "
            "SELECT type, id, version, 'create', coalesce(json_extract(body, '$.recorded'), updated), body "
            "FROM resource WHERE type = 'AuditEvent' AND op <> 'delete'",
            "DELETE FROM history WHERE type = 'AuditEvent'",
            "DELETE FROM resource WHERE type = 'AuditEvent'",
        ),
    ),
)

POSTGRES: Steps = (
    (
        1,
        (
            """CREATE TABLE resource (
                type TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, op TEXT NOT NULL,
                updated TEXT NOT NULL, body JSONB NOT NULL, PRIMARY KEY (type, id))""",
            "CREATE INDEX resource_type_updated ON resource (type, updated)",
            "CREATE INDEX resource_version ON resource (version)",
            "CREATE INDEX resource_body ON resource USING GIN (body jsonb_path_ops)",
            """CREATE TABLE history (
                type TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, op TEXT NOT NULL,
                updated TEXT NOT NULL, body JSONB NOT NULL, PRIMARY KEY (type, id, version))""",
            "CREATE SEQUENCE resource_version_seq",
        ),
    ),
    (
        2,
        (
            f"CREATE INDEX resource_purge_after ON resource (type, ({PURGE_AFTER_POSTGRES})) "
            f"WHERE {PURGE_AFTER_POSTGRES} IS NOT NULL",
        ),
    ),
    (
        3,
        tuple(
            f"CREATE INDEX resource_{name} ON resource (type, {postgres_instant_at(name)}) "
            f"WHERE {postgres_instant_at(name)} IS NOT NULL"
            for name in INSTANT_FIELDS
        ),
    ),
    (
        4,
        (
            """CREATE TABLE seen_once (
                namespace TEXT NOT NULL, key TEXT NOT NULL, expires_at DOUBLE PRECISION NOT NULL,
                PRIMARY KEY (namespace, key))""",
            "CREATE INDEX seen_once_expires_at ON seen_once (expires_at)",
        ),
    ),
    (
        5,
        (
            # ``updated`` (the ``recorded`` instant) compared and sorted bytewise, as SQLite does.
            """CREATE TABLE audit_event (
                type TEXT NOT NULL, id TEXT NOT NULL, version BIGINT NOT NULL, op TEXT NOT NULL,
                updated TEXT COLLATE "C" NOT NULL, body JSONB NOT NULL, PRIMARY KEY (type, id))""",
            "CREATE INDEX audit_event_updated ON audit_event (type, updated)",
            "CREATE INDEX audit_event_body ON audit_event USING GIN (body jsonb_path_ops)",
            "INSERT INTO audit_event (type, id, version, op, updated, body) "
            "SELECT type, id, version, 'create', coalesce(body ->> 'recorded', updated), body "
            "FROM resource WHERE type = 'AuditEvent' AND op <> 'delete'",
            "DELETE FROM history WHERE type = 'AuditEvent'",
            "DELETE FROM resource WHERE type = 'AuditEvent'",
        ),
    ),
    (
        6,
        (
            "DROP INDEX audit_event_body",
            "CREATE INDEX audit_event_search ON audit_event "
            f"USING GIN ({AUDIT_SEARCH_POSTGRES} jsonb_path_ops)",
        ),
    ),
)
