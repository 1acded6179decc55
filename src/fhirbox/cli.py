"""The ``fhirbox`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

import click

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
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )

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
        click.echo(
            f"Generated the root client's secret (shown only this once): {settings.root_client_id}:{secret}\n"
            "Set FHIRBOX_ROOT_CLIENT_SECRET to choose your own."
        )
    export(settings)
    raise_open_file_limit()  # before uvicorn starts: worker processes inherit it
    database = redacted_url(settings.database_url)
    click.echo(f"fhirbox listening on http://{settings.host}:{settings.port} (database {database})")
    sys.stdout.flush()
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
        # httptools with bounded heads, head and keep-alive timeouts and a connection cap (from settings)
        http=PROTOCOL,
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        server_header=False,
        proxy_headers=False,  # forwarded headers are fhirbox's to trust (FHIRBOX_TRUSTED_PROXIES)
        timeout_graceful_shutdown=30,
    )


@main.command("settings")
def show_settings() -> None:
    """List every setting with its environment variable, default and meaning (Markdown)."""
    click.echo(settings_table())


main.add_command(keys_group)
main.add_command(policy_group)

if __name__ == "__main__":
    main()
