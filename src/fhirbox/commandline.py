"""What the ``fhirbox`` commands share about settings: loading them, and flags that override them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.decorators import FC

from fhirbox.settings import SETTINGS_BY_NAME, Settings


def load_settings(**overrides: Any) -> Settings:
    """``Settings.from_env(**overrides)``, with a bad variable reported as a usage error (exit status 2)."""
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


def setting_option(flag: str, name: str) -> Callable[[FC], FC]:
    """A flag for the setting ``name``, its help made of the setting's doc, variable and default."""
    setting = SETTINGS_BY_NAME[name]
    default = "" if setting.default is None else f"; default {setting.default}"
    return click.option(
        flag,
        name,
        type=str if setting.default is None else type(setting.default),
        help=f"{setting.doc.replace('`', '')} [env {setting.env}{default}]",
    )
