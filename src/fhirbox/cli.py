"""The ``fhirbox`` command."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import click

from fhirbox.settings import SETTINGS, Settings, settings_table


def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**overrides)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None


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
@click.option("--host", help="Interface to listen on [env FHIRBOX_HOST; default 127.0.0.1].")
@click.option("--port", type=int, help="TCP port to listen on [env FHIRBOX_PORT; default 8080].")
@click.option(
    "--database",
    "database_url",
    help="sqlite:///path.db or postgresql://user@host:port/db "
    "[env FHIRBOX_DATABASE_URL; default sqlite:///var/fhirbox.db].",
)
@click.option("--workers", type=int, help="Server processes [env FHIRBOX_WORKERS; default 1].")
def serve(host: str | None, port: int | None, database_url: str | None, workers: int | None) -> None:
    """Start the HTTP server. Flags win over the environment; SIGTERM or Ctrl-C stop it cleanly."""
    import uvicorn

    from fhirbox.app import create_app

    settings = load_settings(host=host, port=port, database_url=database_url, workers=workers)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)

    async def prepare() -> str | None:
        await app.startup()
        await app.shutdown()
        return app.generated_root_secret

    try:
        secret = asyncio.run(prepare())
    except Exception as exc:
        click.echo(f"fhirbox: cannot start: {exc}", err=True)
        sys.exit(1)
    if secret:
        click.echo(
            f"Generated the root client's secret (shown only this once): {settings.root_client_id}:{secret}\n"
            "Set FHIRBOX_ROOT_CLIENT_SECRET to choose your own."
        )
    export(settings)
    click.echo(
        f"fhirbox listening on http://{settings.host}:{settings.port} (database {settings.database_url})"
    )
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
        http="httptools",
        lifespan="on",
        access_log=False,
        log_level=settings.log_level.lower(),
        server_header=False,
        timeout_graceful_shutdown=30,
    )


@main.command("settings")
def show_settings() -> None:
    """List every setting with its environment variable, default and meaning (Markdown)."""
    click.echo(settings_table())


def _add_feature_commands() -> None:
    """Features contribute their own command groups (``fhirbox keys``, ``fhirbox policy``)."""
    import importlib

    for module_name in ("fhirbox.oauth.commands", "fhirbox.policy.commands"):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for command in getattr(module, "COMMANDS", ()):
            main.add_command(command)


_add_feature_commands()

if __name__ == "__main__":
    main()
