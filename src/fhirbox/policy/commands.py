"""``fhirbox policy check``: would this client be allowed this request, and by which policy?"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlsplit

import click

from fhirbox.auth.principal import Principal
from fhirbox.commandline import existing_store, load_settings, setting_option
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Message, Request
from fhirbox.models.client import CLIENT
from fhirbox.settings import Settings, redacted_url

ALLOWED, DENIED = 0, 1


@click.group("policy")
def policy_group() -> None:
    """Inspect AccessPolicy decisions against the configured database."""


@policy_group.command("check")
@click.option("--client", "client_id", required=True, help="Id of the Client making the request.")
@setting_option("--database", "database_url")
@click.option("--body", help="JSON body of a POST, PUT or PATCH, for policies that look at it.")
@click.argument("method")
@click.argument("path")
def check(client_id: str, database_url: str | None, body: str | None, method: str, path: str) -> None:
    """Say whether CLIENT may make METHOD PATH (e.g. GET /Patient?name=x) and which policy allows it.

    Exits 0 when allowed, 1 when denied, 2 on a usage error (unknown client, no such route).
    """
    settings = load_settings(database_url=database_url)
    allowed, message = asyncio.run(decide(settings, client_id, method.upper(), path, body))
    click.echo(message)
    raise SystemExit(ALLOWED if allowed else DENIED)


async def decide(
    settings: Settings, client_id: str, method: str, path: str, body: str | None
) -> tuple[bool, str]:
    """``(allowed, explanation)`` for ``client_id`` making ``method path``, as the server decides it:
    the assembled server's router and authorizer judge a request built as the server would build it."""
    from fhirbox.app import create_app

    async with existing_store(settings) as store:
        stored = await store.read(CLIENT, client_id)
        if stored is None or stored.deleted:
            raise click.UsageError(f"No Client/{client_id} in {redacted_url(settings.database_url)}")
        server = create_app(settings, store=store)
        request = synthetic_request(method, path, body, settings)
        try:
            _, request.path_params = server.router.match(method, request.path)
        except HttpError as exc:
            raise click.UsageError(exc.diagnostics) from None
        if client_id == settings.root_client_id:
            return True, f"allowed: {client_id} is the root client, which may do everything"
        principal = Principal(client_id=client_id, client=stored.body)
        decision = await server.authorizer.decide(request, principal)
        if decision.policy is not None:
            policy = decision.policy
            scope = "global" if policy.links.is_global else f"linked to {client_id}"
            return True, f"allowed by AccessPolicy/{policy.id} ({policy.rule.engine}, {scope})"
        ids = ", ".join(f"AccessPolicy/{p.id}" for p in decision.applicable) or "none"
        return False, f"denied: no applicable policy allows {method} {path} (applicable: {ids})"


def synthetic_request(method: str, path: str, body: str | None, settings: Settings) -> Request:
    """A ``Request`` as the server would build it for ``method path`` with an optional JSON body."""
    url = urlsplit(path)
    raw = (body or "").encode()
    headers = [(b"content-type", b"application/json")] if body else []
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": url.path or "/",
        "query_string": url.query.encode(),
        "headers": headers,
        "scheme": "http",
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": raw, "more_body": False}

    return Request(
        scope,
        receive,
        max_body_bytes=settings.max_body_bytes,
        max_depth=settings.max_depth,
        request_id="policy-check",
    )
