"""Assembles fhirbox: every component is built here, with what it depends on passed in.

Read ``create_app`` top to bottom to see the whole server: the store; who is calling (Basic and
Bearer authentication); what they may do (AccessPolicies); the rules of the server's own resource
types; the OAuth endpoints; the routes; the request pipeline; what runs at start and stop.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

from fhirbox.audit import Audit, AuditPurge
from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.basic import BasicAuth
from fhirbox.auth.client_directory import ClientDirectory, prepare_client_write
from fhirbox.auth.root import RootClient, root_guard
from fhirbox.auth.secrets import SecretVerifier
from fhirbox.auth.throttle import FailureCounter
from fhirbox.clock import Clock, system_clock
from fhirbox.console import add_console_routes
from fhirbox.console.gate import ConsoleGate
from fhirbox.console.html import Templates
from fhirbox.console.sessions import ConsoleSessions
from fhirbox.health import Health
from fhirbox.http.forwarded import Forwarding
from fhirbox.http.request import Receive, Scope, Send
from fhirbox.http.routing import Route, Router
from fhirbox.logs import AccessLog
from fhirbox.metrics import Metrics, MetricsEndpoint
from fhirbox.models import audit_event, client, session
from fhirbox.oauth.bearer import BearerAuth
from fhirbox.oauth.client_assertion import ClientAssertions
from fhirbox.oauth.client_auth import ClientAuthentication
from fhirbox.oauth.discovery import Discovery
from fhirbox.oauth.grants import Grant, Issuance
from fhirbox.oauth.grants.client_credentials import ClientCredentialsGrant
from fhirbox.oauth.grants.refresh_token import RefreshTokenGrant
from fhirbox.oauth.introspection import Introspection
from fhirbox.oauth.jwks_fetch import JwksFetcher
from fhirbox.oauth.key_admin import KeyAdmin
from fhirbox.oauth.key_encryption import KeyEncryption
from fhirbox.oauth.keys import KEY_TYPE, KeyRing
from fhirbox.oauth.revocation import Revocation
from fhirbox.oauth.sessions import SessionCache, SessionPurge, count_active_sessions
from fhirbox.oauth.token_endpoint import TokenEndpoint
from fhirbox.oauth.token_formats import JwtTokens
from fhirbox.pipeline import Pipeline
from fhirbox.policy.authorizer import PolicyAuthorizer
from fhirbox.policy.cache import PolicyCache
from fhirbox.policy.compile import ACCESS_POLICY, check_access_policy
from fhirbox.policy.scope_enforcement import ScopeAuthorizer
from fhirbox.policy.tester import PolicyTester
from fhirbox.rest.resources import ResourceApi
from fhirbox.rest.rules import ResourceRules
from fhirbox.settings import Settings
from fhirbox.storage import open_store
from fhirbox.storage.base import Store

log = logging.getLogger("fhirbox")

Hook = Callable[[], Awaitable[None]]


def create_app(
    settings: Settings | None = None, *, store: Store | None = None, clock: Clock = system_clock
) -> App:
    """The whole server, configured by ``settings`` (the environment when None: uvicorn's factory)."""
    settings = settings if settings is not None else Settings.from_env()
    store = store if store is not None else open_store(settings.database_url)
    base_url = settings.public_base_url
    expiration, retention = settings.access_token_expiration, settings.session_retention
    root = RootClient(store, settings.root_client_id, settings.root_client_secret)
    # What the server counts (GET /metrics): each component is given the counters it records.
    metrics = Metrics()
    store.observe_commits(metrics.store_commit)

    # The audit trail: AuditEvents committed with the change they record (FHIRBOX_AUDIT), purged
    # after FHIRBOX_AUDIT_RETENTION.
    audit = Audit(store, settings.audit, settings.audit_retention, clock, base_url)
    audit_purge = AuditPurge(
        store, clock, settings.audit_retention, interval=min(60.0, max(0.5, settings.audit_retention / 2))
    )

    # Where a request comes from: the peer, or what a trusted proxy forwards (address, base URL).
    forwarding = Forwarding(settings.trusted_proxies, base_url, configured=bool(settings.base_url))

    # Who is calling: Basic client credentials, or a Bearer token of one of the client's Sessions.
    # Secrets are hashed in a bounded pool; failed authentications are throttled per address.
    verifier = SecretVerifier(
        concurrency=settings.hash_concurrency, queue=settings.hash_queue, counts=metrics.cache("secret")
    )
    failures = FailureCounter(settings.auth_failure_limit, settings.auth_failure_window, clock)
    clients = ClientDirectory(store, verifier, failures, audit, count_failure=metrics.auth_failure)
    encryption = KeyEncryption(settings.key_encryption_key, settings.key_encryption_key_previous)
    keys = KeyRing(store, settings.signing_alg, settings.signing_key_file, expiration, encryption, audit)
    jwts = JwtTokens(keys, base_url)
    sessions = SessionCache(store, counts=metrics.cache("session"))
    bearer = BearerAuth(clients, sessions, jwts, settings.root_client_id, clock, metrics.auth_failure)
    authenticator = Authenticator([BasicAuth(clients, settings.root_client_id), bearer])
    # OAuth endpoints authenticate clients by secret or by a JWT signed with the client's key
    # (RFC 7523): its keys inline or fetched from its jwks_uri, its jti remembered in the store.
    assertions = ClientAssertions(clients, JwksFetcher(clock), store, clock)
    client_auth = ClientAuthentication(clients, assertions)

    # What they may do: the root client everything; any other client what its token's SMART scopes
    # cover (when it has any) and what an AccessPolicy allows, both.
    policies = PolicyCache(store, counts=metrics.cache("policy"))
    scopes = ScopeAuthorizer()
    authorizer = PolicyAuthorizer(policies, metrics.policy_decision)

    # The OAuth authorization server.
    issuance = Issuance(store, sessions, jwts, expiration, retention, clock, audit)
    grants: dict[str, Grant] = {
        "client_credentials": ClientCredentialsGrant(issuance, clients),
        "refresh_token": RefreshTokenGrant(issuance, reuse_grace=settings.refresh_reuse_grace),
    }
    token = TokenEndpoint(client_auth, grants, metrics.token_issued)
    revocation = Revocation(store, client_auth, retention, clock, audit)
    introspection = Introspection(
        client_auth, clients, sessions, bearer, authorizer, settings.root_client_id, clock
    )
    discovery = Discovery(keys, grant_types=list(grants))
    purge = SessionPurge(store, retention, clock)

    # The server's own resource types, as the REST API writes and shows them. Sessions are written
    # only by the OAuth endpoints; DELETE /Session/{id} closes one. Deleting or deactivating a Client
    # closes its Sessions; the root client cannot be deleted or deactivated. Writes of Clients and
    # AccessPolicies are audited (never their content); AuditEvents are written only by the server.
    rules = ResourceRules()
    rules.record_writes(
        client.CLIENT,
        audit.resource_writes(
            (audit_event.CLIENT_CREATED, audit_event.CLIENT_UPDATED, audit_event.CLIENT_DELETED)
        ),
    )
    rules.record_writes(
        ACCESS_POLICY,
        audit.resource_writes(
            (
                audit_event.ACCESS_POLICY_CREATED,
                audit_event.ACCESS_POLICY_UPDATED,
                audit_event.ACCESS_POLICY_DELETED,
            )
        ),
    )
    rules.server_managed(audit_event.AUDIT_EVENT)
    rules.on_write(client.CLIENT, prepare_client_write)
    rules.guard(client.CLIENT, root_guard(settings.root_client_id))
    rules.after_write(client.CLIENT, revocation.client_written)
    rules.hide_fields(client.CLIENT, *client.HIDDEN_FIELDS)
    rules.server_managed(session.SESSION, on_delete=revocation.close)
    rules.hide_fields(session.SESSION, *session.HIDDEN_FIELDS)
    rules.on_write(ACCESS_POLICY, check_access_policy)
    rules.hide_type(KEY_TYPE)

    # Every route and the access it needs (Route.access; "policy" unless said).
    health = Health(store)
    router = Router()
    router.add("GET", "/health", Route(health.health, "public"))
    router.add("GET", "/ready", Route(health.ready, "public"))
    router.add("POST", "/auth/token", Route(token.handle, "public"))
    router.add("POST", "/auth/revoke", Route(revocation.revoke, "public"))
    router.add("POST", "/auth/introspect", Route(introspection.handle, "public"))
    router.add("DELETE", "/Session", Route(revocation.delete_session, "authenticated"))
    router.add("POST", "/auth/test-policy", Route(PolicyTester(store).handle, "root"))
    scrape = MetricsEndpoint(metrics, lambda: count_active_sessions(store))
    router.add("GET", "/metrics", Route(scrape.handle, "public" if settings.metrics_public else "policy"))
    key_admin = KeyAdmin(keys)
    router.add("GET", "/auth/keys", Route(key_admin.list, "root"))
    router.add("POST", "/auth/keys/rotate", Route(key_admin.rotate, "root"))
    router.add("GET", "/.well-known/jwks.json", Route(discovery.jwks, "public"))
    # RFC 8414 §3: an issuer with a path (http://h/fhir) has its metadata at
    # /.well-known/oauth-authorization-server/fhir; clients that only know OpenID Connect look at
    # openid-configuration (the same document, without ID-token fields).
    issuer_path = urlsplit(base_url).path.rstrip("/")
    for path in (
        "/.well-known/oauth-authorization-server",
        f"/.well-known/oauth-authorization-server{issuer_path}",
        "/.well-known/openid-configuration",
    ):
        router.add("GET", path, Route(discovery.authorization_server, "public"))
    router.add("GET", "/.well-known/smart-configuration", Route(discovery.smart, "public"))
    ResourceApi(store, rules).add_routes(router)

    # The admin console: signed in by a cookie naming a console Session; its pages act as that client
    # through the pipeline (Pipeline.call), under the same policies as the API.
    console = None
    if settings.console:
        console_sessions = ConsoleSessions(
            store,
            sessions,
            clients,
            root_client_id=settings.root_client_id,
            idle_timeout=settings.console_idle_timeout,
            retention=retention,
            clock=clock,
        )
        console = ConsoleGate(console_sessions, Templates())

    # Every request goes through the one pipeline; it writes the access log and the HTTP metrics.
    access_log = AccessLog() if settings.access_log else None
    pipeline = Pipeline(
        router,
        authenticator,
        [scopes, authorizer],
        forwarding,
        metrics,
        access_log,
        max_body_bytes=settings.max_body_bytes,
        body_timeout=settings.body_timeout,
        max_depth=settings.max_depth,
        console=console,
    )
    if console is not None:
        add_console_routes(router, pipeline, console)
    return App(
        settings,
        store,
        pipeline,
        authorizer=authorizer,
        root=root,
        metrics=metrics,
        keys=keys,
        on_start=[root.ensure, keys.start, purge.start, audit_purge.start, policies.refresh],
        # The access log first in, last out: it writes the lines still waiting when all else stopped.
        on_stop=[*([access_log.flush] if access_log is not None else []), purge.stop, audit_purge.stop],
    )


class App:
    """The assembled server as an ASGI application: HTTP to the pipeline, lifespan to the hooks."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        pipeline: Pipeline,
        *,
        authorizer: PolicyAuthorizer,
        root: RootClient,
        metrics: Metrics,
        keys: KeyRing,
        on_start: Sequence[Hook],
        on_stop: Sequence[Hook],
    ) -> None:
        self.settings = settings
        self.base_url = settings.public_base_url
        self.store = store
        self.pipeline = pipeline
        self.router = pipeline.router
        self.authorizer = authorizer
        self.root = root
        self.metrics = metrics
        self.keys = keys
        self.on_start = list(on_start)
        self.on_stop = list(on_stop)

    @property
    def generated_root_secret(self) -> str | None:
        """The root client's secret when this start generated it (to be shown once), else None."""
        return self.root.generated_secret

    # -- lifecycle -------------------------------------------------------------------------------
    async def startup(self) -> None:
        await self.store.open()
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

    # -- ASGI ------------------------------------------------------------------------------------
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.pipeline.handle(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """The server's life in uvicorn (in-process tests call ``startup``/``shutdown`` themselves)."""
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
                settle_startup_objects()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def settle_startup_objects() -> None:
    """Leave what the server built at start out of every later garbage collection.

    A full collection walks every object the collector tracks; with the modules, the app and its
    caches that took ~90 ms and came every few seconds under load, holding every request in flight
    (token p99 50-90 ms against 14 ms). Frozen objects are still freed when nothing refers to them;
    only a reference cycle among them that becomes garbage later is never collected (a bounded
    one-time cost: what existed at start). Collected first, so no garbage is frozen.

    The youngest generation is then collected every ``YOUNG_COLLECTION_AFTER`` new container objects
    rather than CPython's 700: a request makes a few hundred, so the default collected every other
    request, and the older generations (counted in young collections) came as often. What a request
    makes is freed by reference counting; only cycles wait for a collection, which now comes later.
    """
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_AFTER, middle, old)


YOUNG_COLLECTION_AFTER = 10_000
