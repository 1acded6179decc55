"""Every setting of fhirbox: its name, environment variable, type, default and one line of documentation.

This module is the one place where settings are declared: each is one field of ``Settings``, made with
``_setting(default, parse, doc)``; its environment variable is ``FHIRBOX_`` and the field's name in capitals.
``SETTINGS`` is derived from those fields, and from it the README's settings table (``fhirbox settings``),
the help of the ``fhirbox serve`` flags and ``Settings.from_env``.
"""

from __future__ import annotations

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


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"must be true or false, got {value!r}")


def _port(value: str) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"must be a TCP port (0-65535), got {value!r}")
    return number


def _algorithm(value: str) -> str:
    if value not in ("RS256", "ES256", "EdDSA"):
        raise ValueError(f"must be RS256, ES256 or EdDSA, got {value!r}")
    return value


def _audit_level(value: str) -> str:
    if value not in ("all", "security", "off"):
        raise ValueError(f"must be all, security or off, got {value!r}")
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


# The password of a URL's user information, and password parameters of its query string.
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/?#@:]*:)[^/?#@]*@")
_QUERY_PASSWORD = re.compile(r"(?i)([?&](?:ssl)?password=)[^&#]*")
# Shorter passwords are not searched for in free text: replacing them would garble it and reveal them.
_MIN_REDACTED_LENGTH = 4


def redacted_url(url: str) -> str:
    """``url`` with its passwords (user information and ``password`` parameters) shown as ``***``."""
    return _QUERY_PASSWORD.sub(r"\1***", _URL_PASSWORD.sub(r"\1***@", url))


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
