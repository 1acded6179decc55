"""OAuth 2.0 error responses (RFC 6749 §5.2, RFC 6750 §3.1, RFC 8707 §2): one class per error code."""

from __future__ import annotations

from urllib.parse import quote

from fhirbox.http.responses import Response, json_response

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
# RFC 6749 §5.2: error_description is printable ASCII other than '"' and '\\'; anything else (including
# '%', the escape itself) is percent-encoded, so client input echoed in a description stays inside it.
_DESCRIPTION_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) not in '"\\%')


def safe_description(text: str) -> str:
    """``text`` within the character set RFC 6749 §5.2 allows for ``error_description``."""
    if text.isascii() and text.isprintable() and '"' not in text and "\\" not in text and "%" not in text:
        return text
    return quote(text, safe=_DESCRIPTION_SAFE)


class OAuthError(Exception):
    """An error answered as ``{"error", "error_description"}`` JSON with ``Cache-Control: no-store``."""

    error = "invalid_request"
    status = 400

    def __init__(self, description: str) -> None:
        super().__init__(description)
        self.description = safe_description(description)

    def response(self) -> Response:
        return json_response(
            self.status, {"error": self.error, "error_description": self.description}, self.headers()
        )

    def headers(self) -> dict[str, str]:
        return dict(NO_STORE)


class InvalidRequest(OAuthError):
    """A parameter is missing, repeated or malformed, or the body cannot be read."""

    error = "invalid_request"


class InvalidClient(OAuthError):
    """Client authentication failed: unknown client, wrong secret or inactive client, alike."""

    error = "invalid_client"

    def __init__(self, description: str, *, tried_basic: bool) -> None:
        super().__init__(description)
        self.tried_basic = tried_basic

    def response(self) -> Response:
        if not self.tried_basic:
            return super().response()
        # RFC 6749 §5.2: a client that tried the Authorization header gets 401 and a challenge.
        headers = {**NO_STORE, "WWW-Authenticate": 'Basic realm="fhirbox"'}
        return json_response(401, {"error": self.error, "error_description": self.description}, headers)


class InvalidClientAssertion(InvalidClient):
    """RFC 7523 §3.2: a client assertion that is invalid in any way is ``invalid_client``. Answered
    401 with a challenge like a failed Basic authentication (the client did try to authenticate)."""

    def __init__(self, description: str, *, replayed: bool = False) -> None:
        super().__init__(description, tried_basic=True)
        self.replayed = replayed  # a jti seen before: audited as a replay, not as a plain failure


class RetryLater(OAuthError):
    """An error the client should retry after ``retry_after`` seconds (``Retry-After``)."""

    def __init__(self, description: str, *, retry_after: int) -> None:
        super().__init__(description)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {**NO_STORE, "Retry-After": str(self.retry_after)}


class TooManyAttempts(RetryLater):
    """Client authentication is throttled for this address (or this client id from it): 429, and still
    ``invalid_client``, the error RFC 6749 has for a failed client authentication."""

    error = "invalid_client"
    status = 429


class TemporarilyUnavailable(RetryLater):
    """The server cannot check the client's secret now (the hash pool and its queue are full): 503."""

    error = "temporarily_unavailable"
    status = 503


class UnauthorizedClient(OAuthError):
    """The authenticated client may not use this grant type."""

    error = "unauthorized_client"


class UnsupportedGrantType(OAuthError):
    """The grant type is not one this server supports."""

    error = "unsupported_grant_type"


class InvalidGrant(OAuthError):
    """The refresh token is invalid, expired, revoked, reused or was issued to another client."""

    error = "invalid_grant"


class InvalidScope(OAuthError):
    """The requested scope exceeds what the client is allowed."""

    error = "invalid_scope"


class InvalidTarget(OAuthError):
    """The requested audience or resource (RFC 8707) is not one the client may ask for."""

    error = "invalid_target"
