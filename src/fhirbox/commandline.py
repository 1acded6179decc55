"""What the ``fhirbox`` commands share: one-line errors, loading settings, flags that override them, and
opening a database that must already exist.

Every failure a command can foresee is one line on stderr, ``fhirbox: <what> ...``, and an exit status:
2 for a bad flag, variable or argument (a usage error), 1 for anything else (a database that cannot be
opened, a key that cannot be decrypted). No traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import click
from click.decorators import FC

from fhirbox.settings import SETTINGS_BY_NAME, Settings, redact, redact_any_urls
from fhirbox.storage import open_store
from fhirbox.storage.base import Store, StoreUnavailable

USAGE, FAILURE = 2, 1

# The flag of each setting that has one (``--port`` for ``port``), to name it in errors.
_FLAGS: dict[str, str] = {}


class CommandError(click.ClickException):
    """A command cannot do what was asked: one line on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = FAILURE) -> None:
        super().__init__(message)
        self.status = exit_code


class CommandGroup(click.Group):
    """A click group whose errors, click's own usage errors included, are one line on stderr."""

    def main(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.exceptions.Abort:
            click.echo("fhirbox: aborted", err=True)
            sys.exit(FAILURE)
        except click.ClickException as exc:
            click.echo(f"fhirbox: {_one_line(exc.format_message())}", err=True)
            sys.exit(exc.status if isinstance(exc, CommandError) else exc.exit_code)
        except KeyboardInterrupt:
            sys.exit(130)
        except Exception as exc:
            # A failure no command foresaw: still one line (the traceback at FHIRBOX_LOG_LEVEL=debug).
            if os.environ.get("FHIRBOX_LOG_LEVEL", "").lower() == "debug":
                raise
            message = redact_any_urls(_one_line(f"{type(exc).__name__}: {exc}"))
            click.echo(
                f"fhirbox: unexpected error: {message} (FHIRBOX_LOG_LEVEL=debug shows where)", err=True
            )
            sys.exit(FAILURE)
        # standalone_mode=False returns the exit code of click's own exits (--help, --version).
        sys.exit(result if isinstance(result, int) else 0)


def _one_line(message: str) -> str:
    return " ".join(message.split())


def load_settings(**overrides: str | int | None) -> Settings:
    """The settings from the environment, with flags (raw values, checked like the variables) winning.

    A bad variable or flag is a ``CommandError`` naming it, the value and what is allowed (exit 2)."""
    parsed: dict[str, Any] = {}
    for name, raw in overrides.items():
        if raw is None:
            continue
        setting = SETTINGS_BY_NAME[name]
        try:
            parsed[name] = setting.parse(str(raw))
        except ValueError as exc:
            raise CommandError(f"{_FLAGS.get(name, setting.env)}: {exc}", USAGE) from None
    try:
        return Settings.from_env(**parsed)
    except ValueError as exc:
        raise CommandError(str(exc), USAGE) from None


def setting_option(flag: str, name: str) -> Callable[[FC], FC]:
    """A flag for the setting ``name``, its help made of the setting's doc, variable and default.
    Its value is checked by the setting's own parser (``load_settings``), so flag and variable
    accept, and refuse, the same values."""
    setting = SETTINGS_BY_NAME[name]
    _FLAGS[name] = flag
    default = "" if setting.default is None else f"; default {setting.default}"
    return click.option(
        flag,
        name,
        type=str,
        metavar=type(setting.default).__name__.upper() if setting.default is not None else "TEXT",
        help=f"{setting.doc.replace('`', '')} [env {setting.env}{default}]",
    )


@asynccontextmanager
async def existing_store(settings: Settings) -> AsyncIterator[Store]:
    """The configured database, opened only if it already exists and holds fhirbox's tables: commands
    other than ``serve`` never create one. Otherwise a ``CommandError`` (exit 1) saying why."""
    store = open_store(settings.database_url)
    try:
        await store.open(create=False)
    except StoreUnavailable as exc:
        raise CommandError(redact(str(exc), settings.database_url)) from None
    try:
        yield store
    finally:
        await store.close()
