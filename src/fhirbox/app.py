"""Assembles fhirbox: the store, the request pipeline, the REST API and the features that extend it."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.basic import install_basic
from fhirbox.auth.clients import ClientCheck, ClientDirectory, install_client_rules
from fhirbox.auth.principal import Principal
from fhirbox.auth.root import ensure_root_client
from fhirbox.auth.secrets import SecretVerifier
from fhirbox.http.request import Receive, Request, Scope, Send
from fhirbox.http.responses import Response, json_response
from fhirbox.http.routing import Route, Router
from fhirbox.pipeline import Pipeline, RootOnly
from fhirbox.rest.resources import ResourceApi
from fhirbox.rest.rules import ResourceRules
from fhirbox.settings import Settings
from fhirbox.storage import open_store
from fhirbox.storage.base import Store

log = logging.getLogger("fhirbox")

Hook = Callable[[], Awaitable[None]]


class App:
    """The ASGI application. Features add routes, schemes, rules and start/stop hooks to it."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.base_url = settings.public_base_url
        self.store = store if store is not None else open_store(settings.database_url)
        self.rules = ResourceRules()
        self.router = Router()
        self.authenticator = Authenticator()
        self.verifier = SecretVerifier()
        self.clients = ClientDirectory(self.store, self.verifier)
        self.client_checks: list[ClientCheck] = []
        self.on_start: list[Hook] = []
        self.on_stop: list[Hook] = []
        self.generated_root_secret: str | None = None
        self.pipeline = Pipeline(
            self.router, self.authenticator, RootOnly(), settings.max_body_bytes, settings.max_depth
        )
        install_client_rules(self.rules, self.client_checks)
        install_basic(self.authenticator, self.clients, settings.root_client_id)
        self.router.add("GET", "/health", Route(self.health, "health", public=True))
        self.router.add("GET", "/ready", Route(self.ready, "ready", public=True))
        self.resources = ResourceApi(self.store, self.rules, self.base_url)
        self.resources.add_routes(self.router)
        self._install_features()

    def _install_features(self) -> None:
        """Each feature module registers what it needs; see their ``install`` functions."""
        import importlib

        for module_name in ("fhirbox.oauth", "fhirbox.policy"):
            feature = importlib.import_module(module_name)
            install = getattr(feature, "install", None)
            if install is not None:
                install(self)

    # -- lifecycle -------------------------------------------------------------------------------
    async def startup(self) -> None:
        await self.store.open()
        self.generated_root_secret = await ensure_root_client(self.store, self.settings)
        for hook in self.on_start:
            await hook()
        self.store.start_change_feed(self.settings.change_poll_interval)

    async def shutdown(self) -> None:
        for hook in reversed(self.on_stop):
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        await self.store.close()

    # -- built-in routes -------------------------------------------------------------------------
    async def health(self, request: Request, principal: Principal | None) -> Response:
        return json_response(200, {"status": "pass"})

    async def ready(self, request: Request, principal: Principal | None) -> Response:
        if await self.store.ping():
            return json_response(200, {"status": "pass"})
        return json_response(503, {"status": "fail", "detail": "database does not answer"})

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.pipeline.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message: dict[str, Any] = dict(await receive())
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    log.exception("startup failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                if self.generated_root_secret:
                    log.warning("generated root client secret (shown once): %s", self.generated_root_secret)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app() -> App:
    """The application configured from the environment (uvicorn's factory)."""
    return App(Settings.from_env())
