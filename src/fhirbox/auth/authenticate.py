"""The authentication step of the pipeline: the Authorization header's scheme picks a verifier."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request

REALM = "fhirbox"


class Scheme(Protocol):
    """One ``Authorization`` scheme (``basic``, ``bearer``): verifies its credentials."""

    name: str
    challenge: str

    async def verify(self, credentials: str, request: Request) -> Principal:
        """The principal the credentials prove, or a 401 ``HttpError`` (see ``unauthorized``)."""


def unauthorized(diagnostics: str, challenge: str) -> HttpError:
    """A 401 with ``WWW-Authenticate: challenge``."""
    return HttpError(401, diagnostics, headers={"WWW-Authenticate": challenge})


class Authenticator:
    """Turns an ``Authorization`` header into a ``Principal`` or a 401 with ``WWW-Authenticate``.

    It is given every scheme the server accepts; nothing else in the server reads the credentials
    of API calls.
    """

    def __init__(self, schemes: Sequence[Scheme]) -> None:
        self._schemes = {scheme.name.lower(): scheme for scheme in schemes}
        self._challenge = ", ".join(scheme.challenge for scheme in schemes)

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise unauthorized(
                "Authentication required: send Basic client credentials or a Bearer token", self._challenge
            )
        name, _, credentials = header.strip().partition(" ")
        scheme = self._schemes.get(name.lower())
        if scheme is None:
            raise unauthorized(f"Unsupported authorization scheme {name!r}", self._challenge)
        return await scheme.verify(credentials.strip(), request)
