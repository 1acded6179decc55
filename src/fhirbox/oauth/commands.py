"""``fhirbox keys``: list and rotate the JWT signing keys kept in the database."""

from __future__ import annotations

import asyncio
import time

import click

from fhirbox.audit import Audit
from fhirbox.commandline import load_settings, setting_option
from fhirbox.oauth.keys import SigningKey, rotate_keys, stored_keys
from fhirbox.storage import open_store


@click.group("keys")
def keys_group() -> None:
    """JWT signing keys (kept in the database, shared by every server process)."""


@keys_group.command("rotate")
@setting_option("--database", "database_url")
def rotate(database_url: str | None) -> None:
    """Add a new active key (FHIRBOX_SIGNING_ALG); old keys stay in the JWKS until their tokens expire."""
    settings = load_settings(database_url=database_url)
    store = open_store(settings.database_url)

    async def run() -> SigningKey:
        await store.open()
        try:
            audit = Audit(store, settings.audit, settings.audit_retention, time.time, "fhirbox keys rotate")
            return await rotate_keys(
                store, settings.signing_alg, settings.access_token_expiration, audit=audit
            )
        finally:
            await store.close()

    key = asyncio.run(run())
    click.echo(f"new active signing key {key.kid} ({key.alg})")


@keys_group.command("list")
@setting_option("--database", "database_url")
def list_keys(database_url: str | None) -> None:
    """Print every stored key: kid, algorithm, created, and when a retired key leaves the JWKS."""
    settings = load_settings(database_url=database_url)
    store = open_store(settings.database_url)

    async def run() -> list[SigningKey]:
        await store.open()
        try:
            return [SigningKey.from_body(body) for body in await stored_keys(store)]
        finally:
            await store.close()

    for key in sorted(asyncio.run(run()), key=lambda k: k.created):
        state = "active" if key.retired is None else f"retired, published until {_when(key.drop_after)}"
        click.echo(f"{key.kid}  {key.alg}  created {_when(key.created)}  {state}")


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
