"""The authentication step of the pipeline: the Authorization header's scheme picks a verifier."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request

SchemeVerifier = Callable[[str, Request], Awaitable[Principal]]


class Authenticator:
    """Turns an ``Authorization`` header into a ``Principal`` or a 401 with ``WWW-Authenticate``.

    Features register schemes (``basic`` here, ``bearer`` by the OAuth module); nothing else in the
    server reads credentials of API calls.
    """

    def __init__(self, realm: str = "fhirbox") -> None:
        self.realm = realm
        self._schemes: dict[str, SchemeVerifier] = {}
        self._challenges: list[str] = []

    def register(self, scheme: str, verifier: SchemeVerifier, challenge: str) -> None:
        self._schemes[scheme.lower()] = verifier
        self._challenges.append(challenge)

    def challenge(self) -> dict[str, str]:
        return {"WWW-Authenticate": ", ".join(self._challenges)}

    def unauthorized(self, diagnostics: str, challenge: str | None = None) -> HttpError:
        headers = {"WWW-Authenticate": challenge} if challenge else self.challenge()
        return HttpError(401, diagnostics, headers=headers)

    async def authenticate(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise self.unauthorized(
                "Authentication required: send Basic client credentials or a Bearer token"
            )
        scheme, _, credentials = header.strip().partition(" ")
        verifier = self._schemes.get(scheme.lower())
        if verifier is None:
            raise self.unauthorized(f"Unsupported authorization scheme {scheme!r}")
        return await verifier(credentials.strip(), request)
