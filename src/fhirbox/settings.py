"""Every setting of fhirbox: its name, environment variable, type, default and one line of documentation.

This module is the one place where settings are declared: each is one field of ``Settings``, made with
``_setting(default, parse, doc)``; its environment variable is ``FHIRBOX_`` and the field's name in capitals.
``SETTINGS`` is derived from those fields, and from it the README's settings table (``fhirbox settings``),
the help of the ``fhirbox serve`` flags and ``Settings.from_env``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, TypeVar
from urllib.parse import unquote

ENV_PREFIX = "FHIRBOX_"

T = TypeVar("T")


@dataclass(frozen=True)
class Setting:
    name: str
    env: str
    default: Any
    doc: str
    parse: Callable[[str], Any] = str
    secret: bool = False


def _setting(default: T, parse: Callable[[str], T], doc: str, *, secret: bool = False) -> T:
    """A field of ``Settings``: its default, how its environment variable is parsed, and what it means.
    A ``secret`` setting's value is never shown (``fhirbox settings`` prints ``***``), nor is it echoed
    in the error about a bad value."""
    return field(default=default, metadata={"parse": parse, "doc": doc, "secret": secret})


def _number(value: str, kind: Callable[[str], T], allowed: str) -> T:
    try:
        return kind(value)
    except ValueError:
        raise ValueError(f"must be {allowed}, got {value!r}") from None


def _positive_int(value: str) -> int:
    allowed = "a positive integer"
    number = _number(value, int, allowed)
    if number <= 0:
        raise ValueError(f"must be {allowed}, got {value!r}")
    return number


def _non_negative_int(value: str) -> int:
    allowed = "0 or a positive integer"
    number = _number(value, int, allowed)
    if number < 0:
        raise ValueError(f"must be {allowed}, got {value!r}")
    return number


def _positive_float(value: str) -> float:
    allowed = "a positive number"
    number = _number(value, float, allowed)
    if not number > 0 or number == float("inf"):
        raise ValueError(f"must be {allowed}, got {value!r}")
    return number


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _port(value: str) -> int:
    allowed = "a TCP port (0-65535)"
    number = _number(value, int, allowed)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be {allowed}, got {value!r}")
    return number


def _algorithm(value: str) -> str:
    if value not in ("RS256", "ES256", "EdDSA"):
        raise ValueError(f"must be RS256, ES256 or EdDSA, got {value!r}")
    return value


LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(value: str) -> str:
    if value.lower() not in LOG_LEVELS:
        raise ValueError(f"must be debug, info, warning or error, got {value!r}")
    return value.lower()


def _database_url(value: str) -> str:
    """``sqlite:///path`` (three slashes: relative; four: absolute) or ``postgresql://``/``postgres://``.

    ``sqlite:/x.db`` and ``sqlite://x.db`` are refused: SQLAlchemy reads them differently than one
    might expect, and a typo must not silently create a new, empty database somewhere else.
    """
    allowed = "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user@host:port/db"
    shown = redacted_url(value)
    if value.startswith("sqlite:"):
        if not value.startswith("sqlite:///") or value == "sqlite:///":
            raise ValueError(f"must be {allowed}, got {shown!r}")
        return value
    if value.startswith(("postgresql://", "postgres://")):
        return value
    raise ValueError(f"must be {allowed}, got {shown!r}")


def _encryption_key(value: str) -> str:
    """32 bytes in base64 (standard or URL-safe alphabet); kept as given (it is exported to workers)."""
    try:
        key = base64.b64decode(value.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            "must be 32 bytes in base64 (e.g. `openssl rand -base64 32`), got no base64"
        ) from None
    if len(key) != 32:
        raise ValueError(f"must be 32 bytes in base64 (e.g. `openssl rand -base64 32`), got {len(key)} bytes")
    return value


def _audit_level(value: str) -> str:
    if value not in ("all", "security", "off"):
        raise ValueError(f"must be all, security or off, got {value!r}")
    return value


def _log_format(value: str) -> str:
    if value not in ("text", "json"):
        raise ValueError(f"must be text or json, got {value!r}")
    return value


def _proxy_list(value: str) -> str:
    """Comma-separated addresses or CIDRs, each checked; kept as a string (it is exported to workers)."""
    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"must be comma-separated IP addresses or CIDRs, got {item!r}") from None
    return ",".join(items)


@dataclass(frozen=True)
class Settings:
    host: str = _setting("127.0.0.1", str, "Interface the HTTP server listens on.")
    port: int = _setting(8080, _port, "TCP port the HTTP server listens on.")
    database_url: str = _setting(
        "sqlite:///var/fhirbox.db",
        _database_url,
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
        secret=True,
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
    key_encryption_key: str | None = _setting(
        None,
        _encryption_key,
        "32 bytes in base64: private signing keys in the database are encrypted with it (AES-256-GCM); "
        "unset: stored unencrypted.",
        secret=True,
    )
    key_encryption_key_previous: str | None = _setting(
        None,
        _encryption_key,
        "The encryption key being rotated away: keys encrypted with it are still read, and "
        "`fhirbox keys encrypt` re-encrypts them with `FHIRBOX_KEY_ENCRYPTION_KEY`.",
        secret=True,
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
    auth_failure_limit: int = _setting(
        10,
        _positive_int,
        "Failed client authentications from one address (or for one client id from one address) within "
        "`FHIRBOX_AUTH_FAILURE_WINDOW` after which further attempts are answered 429 (counted per process).",
    )
    auth_failure_window: int = _setting(
        60, _positive_int, "Seconds over which failed client authentications are counted."
    )
    hash_concurrency: int | None = _setting(
        None,
        _positive_int,
        "Client secrets hashed at once (scrypt, in threads); default: the number of CPUs.",
    )
    hash_queue: int = _setting(
        32,
        _non_negative_int,
        "Requests that may wait for a secret hash beyond those hashing; more are answered 503 at once.",
    )
    audit: str = _setting(
        "all",
        _audit_level,
        "Which AuditEvents are written: `all`, `security` (all but `token-issued` and `token-refreshed`) "
        "or `off`.",
    )
    audit_retention: int = _setting(
        7776000, _positive_int, "Seconds an AuditEvent is kept before the background purge removes it."
    )
    trusted_proxies: str | None = _setting(
        None,
        _proxy_list,
        "Comma-separated addresses or CIDRs of reverse proxies whose `Forwarded` / `X-Forwarded-*` "
        "headers are honoured (for the client address, and links and `iss` without `FHIRBOX_BASE_URL`).",
    )
    change_poll_interval: float = _setting(
        0.25,
        _positive_float,
        "Seconds between polls of the database for changes made by other server processes.",
    )
    log_level: str = _setting("info", _log_level, "Log level: debug, info, warning or error.")
    log_format: str = _setting(
        "text",
        _log_format,
        "Format of every log line: `text` (one line of key=value fields) or `json` (one object per line).",
    )
    access_log: bool = _setting(
        True,
        _boolean,
        "Write one access-log line per request (whatever `FHIRBOX_LOG_LEVEL`); `false` turns it off.",
    )
    metrics_public: bool = _setting(
        False,
        _boolean,
        "Serve `GET /metrics` without credentials; otherwise it needs root or a client allowed by policy.",
    )
    header_timeout: int = _setting(
        10,
        _positive_int,
        "Seconds a connection has to send a complete request head (from its start or its next "
        "request's first byte) before it is closed.",
    )
    keepalive_timeout: int = _setting(
        5, _positive_int, "Seconds an idle keep-alive connection is kept open between requests."
    )
    body_timeout: float = _setting(
        30.0,
        _positive_float,
        "Seconds a request body may take to arrive once its head has; beyond, 408 and the connection closes.",
    )
    max_connections: int = _setting(
        1000,
        _positive_int,
        "Most connections one server process holds open at once; further ones are closed at once.",
    )

    console: bool = _setting(True, _boolean, "Serve the admin console at `/ui` (`false`: `/ui` is 404).")
    console_idle_timeout: int = _setting(
        1800, _positive_int, "Seconds without use after which a console session is closed."
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

    def __post_init__(self) -> None:
        if self.key_encryption_key_previous is not None and self.key_encryption_key is None:
            raise ValueError(
                "FHIRBOX_KEY_ENCRYPTION_KEY_PREVIOUS is set without FHIRBOX_KEY_ENCRYPTION_KEY: "
                "set the new key too (rotation re-encrypts with it)"
            )


SETTINGS: tuple[Setting, ...] = tuple(
    Setting(
        f.name,
        ENV_PREFIX + f.name.upper(),
        f.default,
        f.metadata["doc"],
        f.metadata["parse"],
        f.metadata["secret"],
    )
    for f in fields(Settings)
)
SETTINGS_BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}


def settings_table() -> str:
    """The settings as a Markdown table, for the README (``fhirbox settings --defaults``)."""
    rows = ["| Variable | Default | Meaning |", "| --- | --- | --- |"]
    for s in SETTINGS:
        rows.append(f"| `{s.env}` | {_shown(s, s.default)} | {s.doc} |")
    return "\n".join(rows)


def effective_settings_table(settings: Settings) -> str:
    """Each setting's value in ``settings`` beside its default (``fhirbox settings``); secrets as ``***``,
    passwords in the database URL too."""
    rows = ["| Variable | Value | Default |", "| --- | --- | --- |"]
    for s in SETTINGS:
        value = getattr(settings, s.name)
        rows.append(f"| `{s.env}` | {_shown(s, value)} | {_shown(s, s.default)} |")
    return "\n".join(rows)


def _shown(setting: Setting, value: Any) -> str:
    if value is None:
        return "(unset)"
    if setting.secret:
        return "`***`"
    if setting.name == "database_url":
        return f"`{redacted_url(str(value))}`"
    return f"`{value}`"


# The password of a URL's user information, and password parameters of its query string.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#@]*@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
# Shorter passwords are not searched for in free text: replacing them would garble it and reveal them.
_MIN_REDACTED_LENGTH = 4


def redacted_url(url: str) -> str:
    """``url`` with its passwords (user information and ``password`` parameters) shown as ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


# Any URL's password in free text (user information, or a password parameter).
_ANY_URL_PASSWORD = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:\s]*:)[^/?#@\s]*@")


def redact_any_urls(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***`` (for messages about unknown URLs)."""
    return _QUERY_PASSWORD.sub(r"\1***", _ANY_URL_PASSWORD.sub(r"\1***@", text))


def redact(text: str, url: str) -> str:
    """``text`` (e.g. an error message) with ``url`` and its passwords redacted wherever they appear."""
    text = text.replace(url, redacted_url(url))
    passwords = [match.group(0).rsplit(":", 1)[1][:-1] for match in _URL_PASSWORD.finditer(url)]
    passwords += [match.group(0).split("=", 1)[1] for match in _QUERY_PASSWORD.finditer(url)]
    for password in passwords:
        for form in {password, unquote(password)}:
            if len(form) >= _MIN_REDACTED_LENGTH:
                text = text.replace(form, "***")
    return text
