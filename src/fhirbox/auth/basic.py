"""HTTP Basic authentication of API calls by a Client's id and secret (RFC 7617)."""

from __future__ import annotations

import base64
import binascii

from fhirbox.auth.authenticate import REALM, unauthorized
from fhirbox.auth.client_directory import ClientDirectory
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


class BasicAuth:
    """The root client, and Clients with ``basic`` in ``grant_types``, may call the API with Basic."""

    name = "basic"
    challenge = f'Basic realm="{REALM}"'

    def __init__(self, clients: ClientDirectory, root_client_id: str) -> None:
        self.clients = clients
        self.root_client_id = root_client_id

    async def verify(self, credentials: str, request: Request) -> Principal:
        pair = decode_basic(credentials)
        if pair is None:
            raise unauthorized("Malformed Basic credentials", self.challenge)
        client_id, secret = pair
        client = await self.clients.authenticate(client_id, secret)
        if client is None:
            raise unauthorized("Invalid client credentials", self.challenge)
        is_root = client_id == self.root_client_id
        if not is_root and not client.allows_grant("basic"):
            raise unauthorized(
                "This client may not use Basic authentication: add 'basic' to its grant_types",
                self.challenge,
            )
        return Principal(client_id=client_id, client=client.body, is_root=is_root)
