"""OAuth 2.0 authorization server for machine clients: the client credentials grant end to end.

``install(app)`` adds the token, revocation and discovery endpoints, the ``bearer`` authentication
scheme, ``DELETE /Session``, the Client setting checks, the signing keys and the Session purge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fhirbox.http.routing import Route
from fhirbox.oauth.bearer import install_bearer
from fhirbox.oauth.clients import check_client_oauth_settings
from fhirbox.oauth.discovery import Discovery
from fhirbox.oauth.grants import Grant
from fhirbox.oauth.grants.client_credentials import ClientCredentialsGrant
from fhirbox.oauth.grants.refresh_token import RefreshTokenGrant
from fhirbox.oauth.keys import KEY_TYPE, KeyRing
from fhirbox.oauth.revocation import Revocation
from fhirbox.oauth.sessions import HIDDEN_FIELDS, SESSION, SessionCache, SessionPurge
from fhirbox.oauth.token import TokenEndpoint
from fhirbox.oauth.tokens import JwtTokens

if TYPE_CHECKING:
    from fhirbox.app import App


def install(app: App) -> None:
    settings = app.settings
    store = app.store
    keys = KeyRing(store, settings.signing_alg, settings.signing_key_file, settings.access_token_expiration)
    jwts = JwtTokens(keys, app.base_url)
    sessions = SessionCache(store)
    expiration, retention = settings.access_token_expiration, settings.session_retention
    grants: dict[str, Grant] = {
        "client_credentials": ClientCredentialsGrant(store, sessions, jwts, expiration, retention),
        "refresh_token": RefreshTokenGrant(store, sessions, jwts, expiration, retention),
    }
    token = TokenEndpoint(app.clients, grants)
    revocation = Revocation(store, app.clients, retention)
    discovery = Discovery(keys, app.base_url)
    purge = SessionPurge(store, retention)

    app.client_checks.append(check_client_oauth_settings)
    app.rules.hide_fields(SESSION, *HIDDEN_FIELDS)
    app.rules.hide_type(KEY_TYPE)
    install_bearer(app.authenticator, app.clients, sessions, jwts, settings.root_client_id)

    router = app.router
    router.add("POST", "/auth/token", Route(token.handle, "auth/token", public=True))
    router.add("POST", "/auth/revoke", Route(revocation.revoke, "auth/revoke", public=True))
    router.add("DELETE", "/Session", Route(revocation.delete_session, "close-session", authorize=False))
    router.add("GET", "/.well-known/jwks.json", Route(discovery.jwks, "jwks", public=True))
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        router.add("GET", path, Route(discovery.authorization_server, "auth/configuration", public=True))

    app.on_start.append(keys.start)
    app.on_start.append(purge.start)
    app.on_stop.append(purge.stop)
