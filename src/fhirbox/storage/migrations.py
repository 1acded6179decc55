"""Versioned schema migrations, one list per backend. Append new steps; never edit applied ones."""

from __future__ import annotations

from fhirbox.storage.base import PATH_KEY, Steps, json_path


def sqlite_number_at(path: tuple[str, ...]) -> str:
    """SQL for the value at a JSON path (fixed keys only), written the way index definitions are."""
    _check(path)
    return "json_extract(body, '" + json_path(path) + "')"


def postgres_number_at(path: tuple[str, ...]) -> str:
    """SQL for the number at a JSON path (NULL when it is not a number), as the index defines it."""
    _check(path)
    pointer = "{" + ",".join(path) + "}"
    return f"(CASE WHEN jsonb_typeof(body #> '{pointer}') = 'number' THEN (body #>> '{pointer}')::float8 END)"


def _check(path: tuple[str, ...]) -> None:
    if not path or not all(PATH_KEY.match(key) for key in path):
        raise ValueError(f"invalid JSON path {path!r}: keys are letters, digits, _ and -")


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
)
