"""HTTP Basic authentication of API calls by a Client's id and secret (RFC 7617)."""

from __future__ import annotations

import base64
import binascii
from urllib.parse import unquote_plus

from fhirbox.auth.authenticate import REALM, unauthorized
from fhirbox.auth.client_directory import ClientDirectory
from fhirbox.auth.principal import Principal
from fhirbox.auth.throttle import HashBusy, Throttled
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request


def decode_basic(credentials: str) -> list[tuple[str, str]] | None:
    """The ``(id, secret)`` readings of the base64 part of a Basic header, or None when malformed.

    Clients disagree on RFC 6749 §2.3.1: some form-urlencode id and secret before joining them (as the
    RFC says), most send them as they are (``curl -u``, ``requests``, Authlib). Both readings are
    returned, the raw one first; the second only when decoding changes anything. The bytes are UTF-8,
    or Latin-1 when they are not valid UTF-8 (RFC 7617's legacy charset, which Authlib sends).
    """
    try:
        raw = base64.b64decode(credentials, validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = raw.decode("latin-1")
    client_id, sep, secret = decoded.partition(":")
    if not sep or not client_id:
        return None
    readings = [(client_id, secret)]
    if "%" in decoded or "+" in decoded:
        form = (unquote_plus(client_id), unquote_plus(secret))
        if form != readings[0] and form[0]:
            readings.append(form)
    return readings


class BasicAuth:
    """The root client, and Clients with ``basic`` in ``grant_types``, may call the API with Basic."""

    name = "basic"
    challenge = f'Basic realm="{REALM}"'

    def __init__(self, clients: ClientDirectory, root_client_id: str) -> None:
        self.clients = clients
        self.root_client_id = root_client_id

    async def verify(self, credentials: str, request: Request) -> Principal:
        readings = decode_basic(credentials)
        if readings is None:
            raise unauthorized("Malformed Basic credentials", self.challenge)
        try:
            client = await self.clients.authenticate_any(readings, request.client_addr, "basic")
        except (Throttled, HashBusy) as busy:
            status = 429 if isinstance(busy, Throttled) else 503
            raise HttpError(status, str(busy), headers={"Retry-After": str(busy.retry_after)}) from None
        if client is None:
            raise unauthorized("Invalid client credentials", self.challenge)
        is_root = client.id == self.root_client_id
        if not is_root and not client.allows_grant("basic"):
            raise unauthorized(
                "This client may not use Basic authentication: add 'basic' to its grant_types",
                self.challenge,
            )
        return Principal(client_id=client.id, client=client.body, is_root=is_root)
