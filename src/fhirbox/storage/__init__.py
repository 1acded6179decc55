"""Durable storage of resources behind one interface, with SQLite and PostgreSQL implementations."""

from __future__ import annotations

from fhirbox.storage.base import Store


def open_store(url: str) -> Store:
    """The store for a database URL: ``sqlite:///path.db`` or ``postgresql://...``."""
    if url.startswith("sqlite:"):
        from fhirbox.storage.sqlite import SQLiteStore

        return SQLiteStore.from_url(url)
    if url.startswith(("postgresql:", "postgres:")):
        from fhirbox.storage.postgres import PostgresStore

        return PostgresStore(url)
    scheme = url.partition(":")[0][:40]
    raise ValueError(f"Unsupported database URL scheme {scheme!r}: use sqlite:///path.db or postgresql://...")
