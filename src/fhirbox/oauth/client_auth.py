"""From HTTP to an OAuth request: the body's parameters and the client's credentials.

The token, revocation and introspection endpoints accept a form body (RFC 6749) or the guide's JSON
body, and authenticate the client by exactly one method: an ``Authorization: Basic`` header (id and
secret as sent or form-urlencoded, see ``decode_basic``; ``client_secret_basic``),
``client_id``/``client_secret`` in the body (``client_secret_post``), or a JWT assertion signed with the
client's key (RFC 7523 §2.2, ``private_key_jwt``; see ``client_assertion``). Every method counts its
failures in the same ``FailureCounter``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from fhirbox.auth.basic import decode_basic
from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.auth.throttle import HashBusy, Throttled
from fhirbox.http.errors import HttpError
from fhirbox.http.formats import FORM_TYPE, JSON_TYPES, media_type, parse_pairs
from fhirbox.http.request import Request
from fhirbox.models.client import JWT_BEARER, Client
from fhirbox.oauth.client_assertion import ClientAssertions, unverified_issuer
from fhirbox.oauth.errors import (
    InvalidClient,
    InvalidClientAssertion,
    InvalidRequest,
    TemporarilyUnavailable,
    TooManyAttempts,
)
from fhirbox.storage.base import storable_text

AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt"]


@dataclass(frozen=True, slots=True)
class OAuthRequest:
    """The parameters of a token or revocation request, the credentials the client presented, and
    where from: its address and the base URL it used (the ``iss`` of tokens issued to it)."""

    params: dict[str, str]
    # The (id, secret) readings to try, in order: one from the body, one or two from Basic.
    credentials: tuple[tuple[str, str], ...]
    tried_basic: bool
    client_addr: str
    issuer: str
    # A client assertion (private_key_jwt) instead of a secret, and the client_id sent with it.
    assertion: str | None = None
    assertion_client_id: str | None = None
    # The path of the endpoint called (an assertion's aud may name its URL).
    path: str = "/auth/token"
    # ``issuer`` came from a proxy's forwarded host: an assertion's aud cannot be checked against it.
    issuer_forwarded: bool = False

    @property
    def auth_method(self) -> AuthMethod:
        """How the client authenticates (RFC 7591's names), as its Session records it."""
        if self.assertion is not None:
            return "private_key_jwt"
        return "client_secret_basic" if self.tried_basic else "client_secret_post"

    def get(self, name: str) -> str | None:
        value = self.params.get(name)
        return value if value else None


async def read_parameters(request: Request) -> dict[str, str]:
    """The body's parameters; ``invalid_request`` for a wrong content type, malformed or repeated ones."""
    if request.method != "POST":
        raise InvalidRequest("Use POST")
    try:
        body = await request.body()
    except HttpError as error:
        if error.status == 408:  # the connection is closed with it: an HTTP matter, not an OAuth one
            raise
        raise InvalidRequest(error.diagnostics) from None
    kind = media_type(request.headers.get("content-type"))
    if kind == FORM_TYPE:
        try:
            pairs = parse_pairs(body.decode("utf-8"), strict=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("Malformed form body") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in params:
                raise InvalidRequest(f"Parameter {name!r} is repeated")
            params[name] = value
        return _without_nul(params)
    if kind in JSON_TYPES:
        try:
            document: Any = json.loads(body, object_pairs_hook=_refuse_repeated_keys)
        except _RepeatedKey as repeated:
            raise InvalidRequest(f"Parameter {repeated.name!r} is repeated") from None
        except (ValueError, RecursionError):
            raise InvalidRequest("Malformed JSON body") from None
        if not isinstance(document, dict):
            raise InvalidRequest("The JSON body must be an object")
        for name, value in document.items():
            if not isinstance(value, str):
                raise InvalidRequest(f"Parameter {name!r} must be a string")
        return _without_nul(document)
    raise InvalidRequest(
        "Content-Type must be application/x-www-form-urlencoded or application/json"
        + (f", not {kind!r}" if kind else "")
    )


class _RepeatedKey(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


def _refuse_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for name, value in pairs:
        if name in document:
            raise _RepeatedKey(name)
        document[name] = value
    return document


def _without_nul(params: dict[str, str]) -> dict[str, str]:
    """``params``, unless a name or value holds U+0000 or a lone surrogate (``"\\ud800"`` in JSON):
    neither is text a backend can store or hash, so ``invalid_request``."""
    for name, value in params.items():
        if not (storable_text(name) and storable_text(value)):
            raise InvalidRequest("Parameters must be valid Unicode text without U+0000 or lone surrogates")
    return params


def _basic_credentials(header: str) -> list[tuple[str, str]]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("The token endpoint accepts only Basic client credentials", tried_basic=True)
    readings = decode_basic(encoded.strip())
    if readings is None:
        raise InvalidClient("Malformed Basic credentials", tried_basic=True)
    return readings


async def read_oauth_request(request: Request) -> OAuthRequest:
    """Parse the body and pick out the client's credentials, refusing two methods in one request."""
    params = await read_parameters(request)
    header = request.headers.get("authorization")
    body_id = params.pop("client_id", None)
    body_secret = params.pop("client_secret", None)
    assertion_type = params.pop("client_assertion_type", None)
    assertion = params.pop("client_assertion", None)
    if assertion_type is not None or assertion is not None:
        if header:
            raise InvalidRequest("Authenticate the client by one method only: a client assertion or Basic")
        if body_secret is not None:
            raise InvalidRequest(
                "Authenticate the client by one method only: a client assertion or client_secret"
            )
        if not assertion_type or not assertion:
            raise InvalidRequest("client_assertion and client_assertion_type go together")
        if assertion_type != JWT_BEARER:
            raise InvalidClientAssertion(f"Unsupported client_assertion_type; supported: {JWT_BEARER}")
        return OAuthRequest(
            params,
            (),
            False,
            request.client_addr,
            request.base_url,
            assertion,
            body_id or None,
            request.path,
            request.base_url_forwarded,
        )
    if header:
        if body_secret is not None:
            raise InvalidRequest("Authenticate the client by one method only: Basic or client_secret")
        readings = _basic_credentials(header)
        if body_id is not None:
            readings = [reading for reading in readings if reading[0] == body_id]
            if not readings:
                raise InvalidRequest("client_id in the body differs from the Basic credentials")
        return OAuthRequest(params, tuple(readings), True, request.client_addr, request.base_url)
    if not body_id:
        raise InvalidClient(
            "Client authentication required: Basic or client_id/client_secret", tried_basic=False
        )
    if not body_secret:
        raise InvalidClient(
            "client_secret is required: only confidential clients are served", tried_basic=False
        )
    return OAuthRequest(params, ((body_id, body_secret),), False, request.client_addr, request.base_url)


class ClientAuthentication:
    """Authenticates the client of an OAuth request by the method it used (see ``read_oauth_request``)."""

    def __init__(self, clients: ClientDirectory, assertions: ClientAssertions) -> None:
        self.clients = clients
        self.assertions = assertions

    async def authenticate(self, oauth: OAuthRequest) -> Client:
        """The client; ``invalid_client`` (401 for Basic and assertions) when authentication fails,
        429 ``invalid_client`` when throttled, 503 when secret hashes are backed up."""
        if oauth.assertion is None:
            return await authenticate_client(self.clients, oauth)
        if oauth.issuer_forwarded:
            # RFC 7523 §3: the aud is this server's identity. Taken from the Host a proxy passes on, any
            # authorization server's assertions (sent with its name as Host) would pass.
            raise InvalidClientAssertion(
                "Client assertions cannot be checked: this server's URL comes from forwarded headers"
                " (FHIRBOX_TRUSTED_PROXIES without FHIRBOX_BASE_URL); set FHIRBOX_BASE_URL"
            )
        # A failed assertion counts against its address and the client it names, as a wrong secret does.
        issuer = unverified_issuer(oauth.assertion)
        named = [issuer] if issuer is not None else []
        failures = self.clients.failures
        try:
            failures.check(named, oauth.client_addr)
        except Throttled as throttled:
            raise TooManyAttempts(str(throttled), retry_after=throttled.retry_after) from None
        try:
            client = await self.assertions.verify(
                oauth.assertion,
                client_id=oauth.assertion_client_id,
                issuer=oauth.issuer,
                endpoint=oauth.issuer + oauth.path,
            )
        except InvalidClientAssertion as refused:
            await self.clients.failed_elsewhere(
                issuer, oauth.client_addr, "private_key_jwt", refused.description, replayed=refused.replayed
            )
            raise
        failures.succeeded(client.id, oauth.client_addr)
        return client


async def authenticate_client(clients: ClientDirectory, oauth: OAuthRequest) -> Client:
    """The client of a secret, or one indistinguishable ``invalid_client`` for unknown, wrong or
    inactive; 429 ``invalid_client`` when its address (or its id there) is throttled, 503 when hashes
    are backed up."""
    try:
        method = "client_secret_basic" if oauth.tried_basic else "client_secret_post"
        client = await clients.authenticate_any(oauth.credentials, oauth.client_addr, method)
    except Throttled as throttled:
        raise TooManyAttempts(str(throttled), retry_after=throttled.retry_after) from None
    except HashBusy as busy:
        raise TemporarilyUnavailable(str(busy), retry_after=busy.retry_after) from None
    if client is None:
        raise InvalidClient("Client authentication failed", tried_basic=oauth.tried_basic)
    return client
