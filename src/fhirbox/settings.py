"""Every setting of fhirbox: its name, environment variable, default and one line of documentation.

This module is the one place where settings are declared. The README's settings table is generated
from ``SETTINGS`` (``fhirbox settings``), and the CLI's flags fall back to the same variables.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    doc: str
    parse: Callable[[str], Any] = str


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    number = float(value)
    if number <= 0:
        raise ValueError(f"must be a positive number, got {value!r}")
    return number


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be a TCP port (0-65535), got {value!r}")
    return number


def _algorithm(value: str) -> str:
    if value not in ("RS256", "ES256", "EdDSA"):
        raise ValueError(f"must be RS256, ES256 or EdDSA, got {value!r}")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "FHIRBOX_HOST", "127.0.0.1", "Interface the HTTP server listens on."),
    Setting("port", "FHIRBOX_PORT", 8080, "TCP port the HTTP server listens on.", _port),
    Setting(
        "database_url",
        "FHIRBOX_DATABASE_URL",
        "sqlite:///var/fhirbox.db",
        "Storage: `sqlite:///relative/or//absolute/path.db` or `postgresql://user@host:port/db`.",
    ),
    Setting("workers", "FHIRBOX_WORKERS", 1, "Number of server processes.", _positive_int),
    Setting(
        "base_url",
        "FHIRBOX_BASE_URL",
        None,
        "Public base URL, used as JWT `iss`, in discovery and links (default `http://HOST:PORT`).",
    ),
    Setting("root_client_id", "FHIRBOX_ROOT_CLIENT_ID", "root", "Id of the root Client ensured at start."),
    Setting(
        "root_client_secret",
        "FHIRBOX_ROOT_CLIENT_SECRET",
        None,
        "Secret of the root Client; when unset, one is generated on first start and printed once.",
    ),
    Setting(
        "max_body_bytes",
        "FHIRBOX_MAX_BODY_BYTES",
        1024 * 1024,
        "Largest accepted request body in bytes (413 beyond).",
        _positive_int,
    ),
    Setting(
        "max_depth",
        "FHIRBOX_MAX_DEPTH",
        100,
        "Deepest accepted nesting of a request document (400 beyond).",
        _positive_int,
    ),
    Setting(
        "access_token_expiration",
        "FHIRBOX_ACCESS_TOKEN_EXPIRATION",
        3600,
        "Default access-token lifetime in seconds, unless the Client sets its own.",
        _positive_int,
    ),
    Setting(
        "signing_alg",
        "FHIRBOX_SIGNING_ALG",
        "RS256",
        "Algorithm of generated JWT signing keys: RS256 (RSA-2048), ES256 or EdDSA.",
        _algorithm,
    ),
    Setting(
        "signing_key_file",
        "FHIRBOX_SIGNING_KEY_FILE",
        None,
        "PEM file with a private signing key to use instead of a generated one.",
    ),
    Setting(
        "session_retention",
        "FHIRBOX_SESSION_RETENTION",
        86400,
        "Seconds an expired or closed Session is kept before the background purge removes it.",
        _positive_int,
    ),
    Setting(
        "change_poll_interval",
        "FHIRBOX_CHANGE_POLL_INTERVAL",
        0.25,
        "Seconds between polls of the database for changes made by other server processes.",
        _positive_float,
    ),
    Setting("log_level", "FHIRBOX_LOG_LEVEL", "info", "Log level: debug, info, warning or error."),
)


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    database_url: str = "sqlite:///var/fhirbox.db"
    workers: int = 1
    base_url: str | None = None
    root_client_id: str = "root"
    root_client_secret: str | None = None
    max_body_bytes: int = 1024 * 1024
    max_depth: int = 100
    access_token_expiration: int = 3600
    signing_alg: str = "RS256"
    signing_key_file: str | None = None
    session_retention: int = 86400
    change_poll_interval: float = 0.25
    log_level: str = "info"

    @property
    def public_base_url(self) -> str:
        """The base URL clients use: ``FHIRBOX_BASE_URL`` or ``http://HOST:PORT``."""
        if self.base_url:
            return self.base_url.rstrip("/")
        return f"http://{self.host}:{self.port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read every setting from the environment; keyword overrides that are not None win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for setting in SETTINGS:
            raw = environ.get(setting.env)
            if raw is not None and raw != "":
                try:
                    values[setting.name] = setting.parse(raw)
                except ValueError as exc:
                    raise ValueError(f"{setting.env}: {exc}") from exc
        values.update({key: value for key, value in overrides.items() if value is not None})
        return cls(**values)


assert {s.name for s in SETTINGS} == {f.name for f in fields(Settings)}, "SETTINGS and Settings disagree"


def settings_table() -> str:
    """The settings as a Markdown table, for the README."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "(unset)" if s.default is None else f"`{s.default}`"
        rows.append(f"| `{s.env}` | {default} | {s.doc} |")
    return "\n".join(rows)
