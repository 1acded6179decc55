"""``fhirbox keys``: list, rotate and encrypt the JWT signing keys kept in the database.

Each opens the configured database only if it exists (``existing_store``): none creates one.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import click

from fhirbox.audit import Audit
from fhirbox.commandline import USAGE, CommandError, existing_store, load_settings, setting_option
from fhirbox.oauth.key_encryption import KeyDecryptionError, KeyEncryption, sealed_with
from fhirbox.oauth.keys import KEY_TYPE, SigningKey, rotate_keys, stored_keys
from fhirbox.settings import Settings
from fhirbox.storage.base import UNCHANGED, Stored


def encryption_of(settings: Settings) -> KeyEncryption:
    return KeyEncryption(settings.key_encryption_key, settings.key_encryption_key_previous)


@click.group("keys")
def keys_group() -> None:
    """JWT signing keys (kept in the database, shared by every server process)."""


@keys_group.command("rotate")
@setting_option("--database", "database_url")
def rotate(database_url: str | None) -> None:
    """Add a new active key (FHIRBOX_SIGNING_ALG); old keys stay in the JWKS until their tokens expire."""
    settings = load_settings(database_url=database_url)

    async def run() -> SigningKey:
        async with existing_store(settings) as store:
            audit = Audit(store, settings.audit, settings.audit_retention, time.time, "fhirbox keys rotate")
            try:
                return await rotate_keys(
                    store,
                    settings.signing_alg,
                    settings.access_token_expiration,
                    encryption_of(settings),
                    audit=audit,
                )
            except KeyDecryptionError as exc:
                raise CommandError(f"cannot rotate: {exc}") from None

    key = asyncio.run(run())
    click.echo(f"new active signing key {key.kid} ({key.alg})")


@keys_group.command("list")
@setting_option("--database", "database_url")
def list_keys(database_url: str | None) -> None:
    """Print every stored key: kid, algorithm, created, state, and how its private key is stored."""
    settings = load_settings(database_url=database_url)

    async def run() -> list[dict[str, Any]]:
        async with existing_store(settings) as store:
            return await stored_keys(store)

    for body in sorted(asyncio.run(run()), key=lambda b: (b.get("created", 0), b.get("kid", ""))):
        retired = body.get("retired")
        state = "active" if retired is None else f"retired, published until {_when(body.get('drop_after'))}"
        sealed = sealed_with(body)
        stored = "unencrypted" if sealed is None else f"encrypted with key id {sealed}"
        click.echo(f"{body['kid']}  {body['alg']}  created {_when(body.get('created'))}  {state}  {stored}")


@keys_group.command("encrypt")
@setting_option("--database", "database_url")
def encrypt(database_url: str | None) -> None:
    """Encrypt every stored private key with FHIRBOX_KEY_ENCRYPTION_KEY, in place: unencrypted keys,
    and keys encrypted with FHIRBOX_KEY_ENCRYPTION_KEY_PREVIOUS (rotation). Running it again is a no-op."""
    settings = load_settings(database_url=database_url)
    encryption = encryption_of(settings)
    if not encryption.enabled:
        raise CommandError(
            "FHIRBOX_KEY_ENCRYPTION_KEY is not set: set it to 32 random bytes in base64 "
            "(e.g. `openssl rand -base64 32`), on the servers too",
            USAGE,
        )

    async def run() -> tuple[int, int]:
        sealed = kept = 0
        async with existing_store(settings) as store:
            bodies = await stored_keys(store)
            try:
                for body in bodies:  # every key must open before any is changed
                    SigningKey.from_body(body, encryption)
            except KeyDecryptionError as exc:
                raise CommandError(f"nothing encrypted: {exc}") from None
            for body in bodies:

                def reseal(current: Stored | None) -> Any:
                    if current is None or current.deleted or not encryption.needs_sealing(current.body):
                        return UNCHANGED
                    return encryption.reseal(current.body["kid"], current.body)

                result = await store.mutate(KEY_TYPE, body["id"], reseal)
                before, after = result.before, result.after
                if before is not None and after is not None and after.version != before.version:
                    sealed += 1
                else:
                    kept += 1
        return sealed, kept

    sealed, kept = asyncio.run(run())
    click.echo(
        f"encrypted {sealed} signing key(s) with encryption key id {encryption.current_id}; "
        f"{kept} already were"
    )


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
