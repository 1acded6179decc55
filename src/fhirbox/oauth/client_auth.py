"""From HTTP to an OAuth request: the body's parameters and the client's credentials.

The token and revocation endpoints accept a form body (RFC 6749) or the guide's JSON body, and
authenticate the client by exactly one method of RFC 6749 §2.3.1: an ``Authorization: Basic`` header
(id and secret form-urlencoded before base64) or ``client_id``/``client_secret`` in the body.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus

import orjson

from fhirbox.auth.basic import decode_basic
from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.http.errors import HttpError
from fhirbox.http.formats import FORM_TYPE, JSON_TYPES, media_type
from fhirbox.http.request import Request
from fhirbox.models.client import Client
from fhirbox.oauth.errors import InvalidClient, InvalidRequest


@dataclass(frozen=True, slots=True)
class OAuthRequest:
    """The parameters of a token or revocation request and the credentials the client presented."""

    params: dict[str, str]
    client_id: str
    client_secret: str
    tried_basic: bool

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
        raise InvalidRequest(error.diagnostics) from None
    kind = media_type(request.headers.get("content-type"))
    if kind == FORM_TYPE:
        try:
            pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
        except (UnicodeDecodeError, ValueError):
            raise InvalidRequest("Malformed form body") from None
        params: dict[str, str] = {}
        for name, value in pairs:
            if name in params:
                raise InvalidRequest(f"Parameter {name!r} is repeated")
            params[name] = value
        return params
    if kind in JSON_TYPES:
        try:
            document: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("Malformed JSON body") from None
        if not isinstance(document, dict):
            raise InvalidRequest("The JSON body must be an object")
        for name, value in document.items():
            if not isinstance(value, str):
                raise InvalidRequest(f"Parameter {name!r} must be a string")
        return document
    raise InvalidRequest(
        "Content-Type must be application/x-www-form-urlencoded or application/json"
        + (f", not {kind!r}" if kind else "")
    )


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise InvalidClient("The token endpoint accepts only Basic client credentials", tried_basic=True)
    pair = decode_basic(encoded.strip())
    if pair is None:
        raise InvalidClient("Malformed Basic credentials", tried_basic=True)
    # RFC 6749 §2.3.1: id and secret are form-urlencoded before they are joined and base64-encoded.
    return unquote_plus(pair[0]), unquote_plus(pair[1])


async def read_oauth_request(request: Request) -> OAuthRequest:
    """Parse the body and pick out the client's credentials, refusing two methods in one request."""
    params = await read_parameters(request)
    header = request.headers.get("authorization")
    body_id = params.pop("client_id", None)
    body_secret = params.pop("client_secret", None)
    if header:
        if body_secret is not None:
            raise InvalidRequest("Authenticate the client by one method only: Basic or client_secret")
        client_id, secret = _basic_credentials(header)
        if body_id is not None and body_id != client_id:
            raise InvalidRequest("client_id in the body differs from the Basic credentials")
        return OAuthRequest(params, client_id, secret, tried_basic=True)
    if not body_id:
        raise InvalidClient(
            "Client authentication required: Basic or client_id/client_secret", tried_basic=False
        )
    if not body_secret:
        raise InvalidClient(
            "client_secret is required: only confidential clients are served", tried_basic=False
        )
    return OAuthRequest(params, body_id, body_secret, tried_basic=False)


async def authenticate_client(clients: ClientDirectory, oauth: OAuthRequest) -> Client:
    """The client, or one indistinguishable ``invalid_client`` for unknown, wrong or inactive."""
    client = await clients.authenticate(oauth.client_id, oauth.client_secret)
    if client is None:
        raise InvalidClient("Client authentication failed", tried_basic=oauth.tried_basic)
    return client
