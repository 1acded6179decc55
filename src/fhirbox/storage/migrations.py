"""Versioned schema migrations, one list per backend. Append new steps; never edit applied ones."""

from __future__ import annotations

SQLITE: tuple[tuple[int, tuple[str, ...]], ...] = (
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
)

POSTGRES: tuple[tuple[int, tuple[str, ...]], ...] = (
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
)

LATEST_SQLITE = SQLITE[-1][0]
LATEST_POSTGRES = POSTGRES[-1][0]
