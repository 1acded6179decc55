"""Console sign-in: an opaque cookie naming a ``Session`` of type ``console``, kept only as a hash.

The cookie is ``<session id>.<256 random bits>`` (the opaque token format) and its Session stores
``console_token`` (its SHA-256), never ``access_token``: BearerAuth refuses console Sessions and this
module refuses every other type, so neither credential works in the other's place. A console Session
closes on sign-out, when its client is deactivated or deleted (``Revocation.client_written`` closes
every Session of the client), and ``FHIRBOX_CONSOLE_IDLE_TIMEOUT`` seconds after its last use. Each
use moves ``exp`` forward, written at most every ``touch_interval`` seconds, so the timeout errs early
by at most that much, never late.

Every POST of a signed-in page carries a CSRF token derived from the cookie (which scripts cannot read:
``HttpOnly``) and checked here before any handler runs.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from typing import Any

from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.auth.throttle import HashBusy, Throttled
from fhirbox.clock import Clock
from fhirbox.console.forms import read_form
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.models.client import Client
from fhirbox.models.session import SESSION, Session
from fhirbox.oauth.sessions import SessionCache, close_session
from fhirbox.oauth.token_formats import new_session_id, opaque_token, session_id_of, token_hash
from fhirbox.storage.base import UNCHANGED, Store, Stored

log = logging.getLogger("fhirbox.console")

COOKIE = "fhirbox_console"
COOKIE_PATH = "/ui"
CSRF_FIELD = "csrf"
_MAX_COOKIE = 200
SCOPE_LIMITED = (
    "This client may not use the console: SMART scopes limit its API access and it may not use Basic "
    "credentials, so its secret alone may not act for it"
)


class SignInRefused(Exception):
    """Sign-in failed; ``status`` is what the sign-in page answers (401, 429, 503)."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def cookie_value(request: Request) -> str | None:
    """The console cookie of ``request``, or None."""
    header = request.headers.get("cookie")
    if not header or COOKIE not in header:
        return None
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name == COOKIE and 0 < len(value) <= _MAX_COOKIE:
            return value
    return None


def csrf_token(cookie: str) -> str:
    """The CSRF token of the console session ``cookie`` (a keyed hash: it reveals nothing of it)."""
    return hmac.new(cookie.encode(), b"fhirbox console csrf", hashlib.sha256).hexdigest()


class ConsoleSessions:
    def __init__(
        self,
        store: Store,
        sessions: SessionCache,
        clients: ClientDirectory,
        *,
        root_client_id: str,
        idle_timeout: int,
        retention: int,
        clock: Clock,
    ) -> None:
        self.store = store
        self.sessions = sessions
        self.clients = clients
        self.root_client_id = root_client_id
        self.idle_timeout = idle_timeout
        self.retention = retention
        self.clock = clock
        self.touch_interval = min(60, max(1, idle_timeout // 10))

    def principal_of(self, client: Client, session: Session | None = None) -> Principal:
        return Principal(
            client_id=client.id,
            client=client.body,
            is_root=client.id == self.root_client_id,
            session=session.public_view() if session is not None else None,
        )

    async def check_credentials(self, client_id: str, secret: str, address: str) -> Client:
        """The live Client these credentials prove, counted by the credential-guessing throttle."""
        try:
            # A failure is counted by the throttle and recorded in the audit trail (method "console").
            client = await self.clients.authenticate_any([(client_id, secret)], address, "console")
        except Throttled as busy:
            self.sign_in_failed(client_id, address, "throttled")
            raise SignInRefused(429, str(busy), busy.retry_after) from None
        except HashBusy as busy:
            raise SignInRefused(503, str(busy), busy.retry_after) from None
        if client is None:
            self.sign_in_failed(client_id, address, "invalid client credentials")
            raise SignInRefused(401, "Invalid client id or secret")
        if self.limited_by_scopes(client):
            self.sign_in_failed(client_id, address, "limited by SMART scopes")
            raise SignInRefused(403, SCOPE_LIMITED)
        return client

    def limited_by_scopes(self, client: Client) -> bool:
        """Whether SMART scopes limit every API credential of ``client`` (it has ``system/`` scopes and
        may not use Basic): its secret alone, as the console uses it, would act beyond them."""
        return (
            client.id != self.root_client_id and client.is_smart_scoped and not client.allows_grant("basic")
        )

    def sign_in_failed(self, client_id: str, address: str, reason: str) -> None:
        """Every refused console sign-in passes here (logged). Wrong credentials and throttling are
        already in the audit trail (``ClientDirectory.authenticate_any``, method ``console``); a client
        with the right secret but no policy allowing ``GET /ui`` is only logged."""
        log.info("console sign-in refused from %s: %s", address, reason)

    async def open(self, client: Client) -> str:
        """A new console Session for ``client``; returns its cookie value (shown only to the browser)."""
        session_id = new_session_id()
        cookie = opaque_token(session_id)
        session = Session.new_console(
            session_id=session_id,
            client_id=client.id,
            cookie_hash=token_hash(cookie),
            now=self.clock(),
            idle=self.idle_timeout,
            retention=self.retention,
        )

        def create(current: Stored | None) -> dict[str, Any] | Any:
            return UNCHANGED if current is not None else session.body

        await self.store.mutate(SESSION, session_id, create)
        return cookie

    async def authenticate(self, request: Request) -> Principal:
        """The principal of the request's console cookie; 401 when there is none that works now."""
        cookie = cookie_value(request)
        session_id = session_id_of(cookie) if cookie is not None else None
        entry = await self.sessions.get(session_id) if session_id and cookie else None
        if entry is None or cookie is None or not entry.session.holds_console(token_hash(cookie)):
            raise HttpError(401, "Sign in to use the console")
        session = entry.session
        if not session.active:
            raise HttpError(401, "This console session was closed: sign in again")
        now = self.clock()
        if session.access_expired(now):
            await self.close(session.id, "idle timeout")
            raise HttpError(401, "This console session timed out: sign in again")
        client_id = session.client_id
        client = await self.clients.get(client_id) if client_id is not None else None
        if client is None:
            raise HttpError(401, "The client of this console session is inactive or deleted")
        if self.limited_by_scopes(client):
            raise HttpError(403, SCOPE_LIMITED)
        if int(now) + self.idle_timeout - int(session.body.get("exp", 0)) >= self.touch_interval:
            await self.touch(session.id, now)
        if request.method == "POST":
            await self.check_csrf(request, cookie)
        return self.principal_of(client, session)

    async def touch(self, session_id: str, now: float) -> None:
        def use(current: Stored | None) -> dict[str, Any] | Any:
            if current is None or current.deleted or not Session(current.body).active:
                return UNCHANGED
            return Session(current.body).used(now, self.idle_timeout, self.retention)

        await self.store.mutate(SESSION, session_id, use)

    async def check_csrf(self, request: Request, cookie: str) -> None:
        """403 unless the form's ``csrf`` field is this session's CSRF token."""
        form = await read_form(request)
        given = form.first(CSRF_FIELD)
        if not hmac.compare_digest(given.encode(), csrf_token(cookie).encode()):
            raise HttpError(403, "This form has expired or did not come from this console: reload and retry")

    async def close(self, session_id: str, reason: str) -> None:
        await close_session(self.store, session_id, reason, now=self.clock(), retention=self.retention)

    async def sign_out(self, request: Request) -> None:
        """Close the request's console Session, if it has one."""
        cookie = cookie_value(request)
        session_id = session_id_of(cookie) if cookie is not None else None
        entry = await self.sessions.get(session_id) if session_id and cookie else None
        if entry is not None and cookie is not None and entry.session.holds_console(token_hash(cookie)):
            await self.close(entry.session.id, "signed out")
