"""HTTP Basic authentication of API calls by a Client's id and secret (RFC 7617)."""

from __future__ import annotations

import base64
import binascii

from fhirbox.auth.authenticate import Authenticator
from fhirbox.auth.clients import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request


def decode_basic(credentials: str) -> tuple[str, str] | None:
    """``(id, secret)`` from the base64 part of a Basic header, or None when malformed."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        return None
    return client_id, secret


def install_basic(authenticator: Authenticator, clients: ClientDirectory, root_client_id: str) -> None:
    """Let the root client, and Clients with ``basic`` in ``grant_types``, call the API with Basic."""
    challenge = f'Basic realm="{authenticator.realm}"'

    async def verify(credentials: str, request: Request) -> Principal:
        pair = decode_basic(credentials)
        if pair is None:
            raise authenticator.unauthorized("Malformed Basic credentials", challenge)
        client_id, secret = pair
        client = await clients.authenticate(client_id, secret)
        if client is None:
            raise authenticator.unauthorized("Invalid client credentials", challenge)
        is_root = client_id == root_client_id
        if not is_root and "basic" not in client.body.get("grant_types", ()):
            raise authenticator.unauthorized(
                "This client may not use Basic authentication: add 'basic' to its grant_types", challenge
            )
        return Principal(client_id=client_id, client=client.body, is_root=is_root)

    authenticator.register("basic", verify, challenge)
