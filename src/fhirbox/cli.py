"""The ``fhirbox`` command."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile
from dataclasses import dataclass
from importlib.metadata import version
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

from fhirbox import logs
from fhirbox.commandline import (
    FAILURE,
    USAGE,
    CommandError,
    CommandGroup,
    load_settings,
    setting_option,
)
from fhirbox.oauth.commands import keys_group
from fhirbox.policy.commands import policy_group
from fhirbox.settings import (
    SETTINGS,
    Settings,
    effective_settings_table,
    redact,
    redacted_url,
    settings_table,
)

log = logging.getLogger("fhirbox")


def export(settings: Settings) -> None:
    """Put the effective settings in the environment, so server worker processes see the same."""
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        if value is not None:
            os.environ[setting.env] = str(value)


@click.group(cls=CommandGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(version("fhirbox"), "--version", prog_name="fhirbox", message="%(prog)s %(version)s")
def main() -> None:
    """fhirbox: a FHIR-style resource server with an OAuth 2.0 authorization server for machine clients.

    Every setting is read from a FHIRBOX_* environment variable; `fhirbox settings` lists them all.
    """


@dataclass(frozen=True)
class Prepared:
    """What the first start (in this process, before the workers) found out."""

    generated_root_secret: str | None
    unencrypted_keys: list[str]


@main.command()
@setting_option("--host", "host")
@setting_option("--port", "port")
@setting_option("--database", "database_url")
@setting_option("--workers", "workers")
def serve(host: str | None, port: str | None, database_url: str | None, workers: str | None) -> None:
    """Start the HTTP server. Flags win over the environment; SIGTERM or Ctrl-C stop it cleanly."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    from fhirbox.app import create_app
    from fhirbox.http.server import PROTOCOL, raise_open_file_limit

    settings = load_settings(host=host, port=port, database_url=database_url, workers=workers)
    # Every line from here on, in this process and in each worker, has the FHIRBOX_LOG_FORMAT format.
    log_config = logs.logging_config(settings.log_format, settings.log_level)
    logs.configure(settings.log_format, settings.log_level)
    announce = logging.getLogger(logs.SERVER_LOGGER)

    # Bound first: a port in use is refused before the database is touched, and "listening" below is
    # printed only once the socket every server process will serve is bound.
    sock = bind(settings.host, settings.port)
    settings = dataclasses.replace(settings, port=sock.getsockname()[1])  # --port 0: the port chosen

    async def prepare() -> Prepared:
        app = create_app(settings)
        await app.startup()
        await app.shutdown()
        return Prepared(app.generated_root_secret, app.keys.unencrypted)

    try:
        prepared = asyncio.run(prepare())
    except Exception as exc:
        sock.close()
        raise CommandError(f"cannot start: {redact(str(exc), settings.database_url)}") from None
    if prepared.generated_root_secret:
        announce.warning(
            "Generated the root client's secret (shown only this once): %s:%s. "
            "Set FHIRBOX_ROOT_CLIENT_SECRET to choose your own.",
            settings.root_client_id,
            prepared.generated_root_secret,
        )
    if prepared.unencrypted_keys:
        # With the key already set, new keys are stored encrypted: only the stored ones are left to do.
        remedy = "run" if settings.key_encryption_key else "set FHIRBOX_KEY_ENCRYPTION_KEY and run"
        log.warning(
            "%d private signing key(s) are stored unencrypted in the database (and in its backups): "
            "%s `fhirbox keys encrypt`",
            len(prepared.unencrypted_keys),
            remedy,
        )
    export(settings)
    raise_open_file_limit()  # before uvicorn starts: worker processes inherit it
    metrics_dir = _metrics_directory(settings.workers)
    database = redacted_url(settings.database_url)
    announce.info("fhirbox listening on http://%s:%s (database %s)", settings.host, settings.port, database)
    # uvicorn re-raises the stop signal after its graceful shutdown; a no-op handler turns that into a
    # normal exit (status 0) instead of death by signal.
    for stop_signal in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop_signal, lambda signum, frame: None)
    config = uvicorn.Config(
        "fhirbox.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers,
        loop="uvloop",
        log_config=log_config,
        # httptools with bounded heads, head and keep-alive timeouts and a connection cap (from settings)
        http=PROTOCOL,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        server_header=False,
        proxy_headers=False,  # forwarded headers are fhirbox's to trust (FHIRBOX_TRUSTED_PROXIES)
        timeout_graceful_shutdown=30,
    )
    try:
        if settings.workers > 1:
            Multiprocess(config, sockets=[sock]).run()
        else:
            server = uvicorn.Server(config)
            server.run(sockets=[sock])
            if not server.started:
                sys.exit(FAILURE)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_directory(workers: int) -> str | None:
    """With several workers, a fresh directory for their metrics (prometheus_client's multiprocess
    mode), named in the environment the workers inherit; None (and no such variable) with one."""
    from fhirbox.metrics import MULTIPROCESS_ENV

    os.environ.pop(MULTIPROCESS_ENV, None)
    if workers <= 1:
        return None
    directory = tempfile.mkdtemp(prefix="fhirbox-metrics-")
    os.environ[MULTIPROCESS_ENV] = directory
    return directory


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound now: a port in use (or a host that is not ours) is one line, exit 1."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CommandError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.set_inheritable(True)
    return sock


@main.command("settings")
@click.option(
    "--defaults", is_flag=True, help="Print every setting's default and meaning (the README table)."
)
def show_settings(defaults: bool) -> None:
    """Show each setting's effective value (from the environment) beside its default; secrets as ***."""
    if defaults:
        click.echo(settings_table())
        return
    click.echo(effective_settings_table(load_settings()))


@main.command("backup")
@setting_option("--database", "database_url")
@click.argument("path", type=click.Path(dir_okay=False))
def backup(database_url: str | None, path: str) -> None:
    """Copy the SQLite database to PATH (a new file) while the server runs: a consistent snapshot,
    checked with integrity_check. For PostgreSQL use pg_dump."""
    from fhirbox.storage.sqlite import SQLiteStore, backup_database

    settings = load_settings(database_url=database_url)
    if not settings.database_url.startswith("sqlite:"):
        raise CommandError(
            "fhirbox backup copies SQLite databases; for PostgreSQL use pg_dump, e.g. "
            f"{pg_dump_hint(settings.database_url, path)}",
            USAGE,
        )
    source = SQLiteStore.from_url(settings.database_url).path
    try:
        copied = backup_database(source, path)
    except (OSError, ValueError) as exc:
        raise CommandError(f"no backup made: {exc}") from None
    click.echo(
        f"backed up {source} to {path}: {copied.resources} resources, schema version "
        f"{copied.schema_version}, {copied.size} bytes, integrity_check ok"
    )


def pg_dump_hint(url: str, path: str) -> str:
    """A pg_dump command line that dumps fhirbox's store at the PostgreSQL ``url``, never its password.

    pg_dump refuses the URI parameter ``search_path`` (asyncpg sends it to the server as a setting;
    libpq knows no such parameter), so such a URL is shown without it and without its passwords, and its
    schemas become ``--schema`` options. Any other URL is left to the shell, in $FHIRBOX_DATABASE_URL."""
    if not _has_query_parameter(url, "search_path"):
        return f'pg_dump --format=custom --file={shlex.quote(path)} "$FHIRBOX_DATABASE_URL"'
    parts = urlsplit(url)
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, colon, _ = userinfo.partition(":")
    schemas: list[str] = []
    kept: list[tuple[str, str]] = []
    password_left_out = bool(colon)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "search_path":
            schemas += [
                schema.strip() for schema in value.split(",") if schema.strip() not in ("", '"$user"')
            ]
        elif name.lower() in ("password", "sslpassword"):
            password_left_out = True
        else:
            kept.append((name, value))
    bare = urlunsplit(
        parts._replace(netloc=f"{user}@{hostport}" if user else hostport, query=urlencode(kept))
    )
    options = "".join(f" --schema={shlex.quote(schema)}" for schema in schemas)
    hint = f"pg_dump --format=custom{options} --file={shlex.quote(path)} {shlex.quote(bare)}"
    if password_left_out:
        hint += " (with the password, not shown here, in PGPASSWORD or ~/.pgpass)"
    return hint


def _has_query_parameter(url: str, name: str) -> bool:
    return any(key == name for key, _ in parse_qsl(urlsplit(url).query, keep_blank_values=True))


main.add_command(keys_group)
main.add_command(policy_group)

if __name__ == "__main__":
    main()
