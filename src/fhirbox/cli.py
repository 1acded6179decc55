"""The ``fhirbox`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile

import click

from fhirbox import logs
from fhirbox.commandline import load_settings, setting_option
from fhirbox.oauth.commands import keys_group
from fhirbox.policy.commands import policy_group
from fhirbox.settings import SETTINGS, Settings, redact, redacted_url, settings_table


def export(settings: Settings) -> None:
    """Put the effective settings in the environment, so server worker processes see the same."""
    for setting in SETTINGS:
        value = getattr(settings, setting.name)
        if value is not None:
            os.environ[setting.env] = str(value)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """fhirbox: a FHIR-style resource server with an OAuth 2.0 authorization server for machine clients.

    Every setting is read from a FHIRBOX_* environment variable; `fhirbox settings` lists them all.
    """


@main.command()
@setting_option("--host", "host")
@setting_option("--port", "port")
@setting_option("--database", "database_url")
@setting_option("--workers", "workers")
def serve(host: str | None, port: int | None, database_url: str | None, workers: int | None) -> None:
    """Start the HTTP server. Flags win over the environment; SIGTERM or Ctrl-C stop it cleanly."""
    import uvicorn

    from fhirbox.app import create_app
    from fhirbox.http.server import PROTOCOL, raise_open_file_limit

    settings = load_settings(host=host, port=port, database_url=database_url, workers=workers)
    # Every line from here on, in this process and in each worker, has the FHIRBOX_LOG_FORMAT format.
    log_config = logs.logging_config(settings.log_format, settings.log_level)
    logs.configure(settings.log_format, settings.log_level)
    announce = logging.getLogger(logs.SERVER_LOGGER)

    async def prepare() -> str | None:
        app = create_app(settings)
        await app.startup()
        await app.shutdown()
        return app.generated_root_secret

    try:
        secret = asyncio.run(prepare())
    except Exception as exc:
        click.echo(f"fhirbox: cannot start: {redact(str(exc), settings.database_url)}", err=True)
        sys.exit(1)
    if secret:
        announce.warning(
            "Generated the root client's secret (shown only this once): %s:%s. "
            "Set FHIRBOX_ROOT_CLIENT_SECRET to choose your own.",
            settings.root_client_id,
            secret,
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
    uvicorn.run(
        "fhirbox.app:create_app",
        factory=True,
        host=settings.host,
        port=settings.port,
        workers=settings.workers if settings.workers > 1 else None,
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


@main.command("settings")
def show_settings() -> None:
    """List every setting with its environment variable, default and meaning (Markdown)."""
    click.echo(settings_table())


main.add_command(keys_group)
main.add_command(policy_group)

if __name__ == "__main__":
    main()
