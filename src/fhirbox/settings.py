"""Every setting of fhirbox: its name, environment variable, type, default and one line of documentation.

This module is the one place where settings are declared: each is one field of ``Settings``, made with
``_setting(default, parse, doc)``; its environment variable is ``FHIRBOX_`` and the field's name in capitals.
``SETTINGS`` is derived from those fields, and from it the README's settings table (``fhirbox settings``),
the help of the ``fhirbox serve`` flags and ``Settings.from_env``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

ENV_PREFIX = "FHIRBOX_"

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    doc: str
    parse: Callable[[str], Any] = str


def _setting(default: T, parse: Callable[[str], T], doc: str) -> T:
    """A field of ``Settings``: its default, how its environment variable is parsed, and what it means."""
    return field(default=default, metadata={"parse": parse, "doc": doc})


def _positive_int(value: str) -> int:
    number = int(value)
    if number <= 0:
        raise ValueError(f"must be a positive integer, got {value!r}")
    return number


def _non_negative_int(value: str) -> int:
    number = int(value)
    if number < 0:
        raise ValueError(f"must be 0 or a positive integer, got {value!r}")
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


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", str, "Interface the HTTP server listens on.")
    port: int = _setting(8080, _port, "TCP port the HTTP server listens on.")
    database_url: str = _setting(
        "sqlite:///var/fhirbox.db",
        str,
        "Storage: `sqlite:///relative/or//absolute/path.db` or `postgresql://user@host:port/db`.",
    )
    workers: int = _setting(1, _positive_int, "Number of server processes.")
    base_url: str | None = _setting(
        None,
        str,
        "Public base URL, used as JWT `iss`, in discovery and links (default `http://HOST:PORT`).",
    )
    root_client_id: str = _setting("root", str, "Id of the root Client ensured at start.")
    root_client_secret: str | None = _setting(
        None,
        str,
        "Secret of the root Client; when unset, one is generated on first start and printed once.",
    )
    max_body_bytes: int = _setting(
        1024 * 1024, _positive_int, "Largest accepted request body in bytes (413 beyond)."
    )
    max_depth: int = _setting(
        100, _positive_int, "Deepest accepted nesting of a request document (400 beyond)."
    )
    access_token_expiration: int = _setting(
        3600, _positive_int, "Default access-token lifetime in seconds, unless the Client sets its own."
    )
    signing_alg: str = _setting(
        "RS256", _algorithm, "Algorithm of generated JWT signing keys: RS256 (RSA-2048), ES256 or EdDSA."
    )
    signing_key_file: str | None = _setting(
        None, str, "PEM file with a private signing key to use instead of a generated one."
    )
    session_retention: int = _setting(
        86400,
        _positive_int,
        "Seconds an expired or closed Session is kept before the background purge removes it.",
    )
    refresh_reuse_grace: int = _setting(
        5,
        _non_negative_int,
        "Seconds in which presenting the refresh token just rotated away (a concurrent refresh) is "
        "`invalid_grant` without revoking the Session; later reuse revokes it.",
    )
    change_poll_interval: float = _setting(
        0.25,
        _positive_float,
        "Seconds between polls of the database for changes made by other server processes.",
    )
    log_level: str = _setting("info", str, "Log level: debug, info, warning or error.")
    header_timeout: int = _setting(
        10,
        _positive_int,
        "Seconds a connection has to send a complete request head (from its start or its next "
        "request's first byte) before it is closed.",
    )
    keepalive_timeout: int = _setting(
        5, _positive_int, "Seconds an idle keep-alive connection is kept open between requests."
    )
    max_connections: int = _setting(
        1000,
        _positive_int,
        "Most connections one server process holds open at once; further ones are closed at once.",
    )

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


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(f.name, ENV_PREFIX + f.name.upper(), f.default, f.metadata["doc"], f.metadata["parse"])
    for f in fields(Settings)
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def settings_table() -> str:
    """The settings as a Markdown table, for the README."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        default = "(unset)" if s.default is None else f"`{s.default}`"
        rows.append(f"| `{s.env}` | {default} | {s.doc} |")
    return "\n".join(rows)


def redacted_url(url: str) -> str:
    """``url`` with its password shown as ``***`` (for banners, errors and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port is not None else "")
    return urlunsplit(parts._replace(netloc=netloc))


def redact(text: str, url: str) -> str:
    """``text`` with the password of ``url`` shown as ``***`` wherever it appears."""
    password = urlsplit(url).password
    for form in {password, unquote(password)} if password else ():
        text = text.replace(form, "***")
    return text
