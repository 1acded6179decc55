"""A ``Session``: one per issued access token, holding the hashes of its tokens and its lifetimes;
or, with ``type: console``, one per sign-in to the admin console, holding the hash of its cookie.

Sessions are written only by the token endpoint and by revocation; REST responses never show the
token hashes. A Session's tokens work while it is active, unexpired and still holds their hash, so
closing a Session stops its tokens at once, JWTs included.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fhirbox.models.client import CLIENT

SESSION = "Session"
# A console sign-in's Session type. Its cookie's hash is kept apart from ``access_token``, so a console
# cookie is never a bearer token and a bearer token is never a console cookie.
CONSOLE = "console"
# Token hashes; never shown, never searchable.
HIDDEN_FIELDS = ("access_token", "refresh_token", "refresh_token_history", "console_token")
# Rotated refresh tokens remembered per Session, to detect their reuse (RFC 9700 §4.14).
REFRESH_HISTORY = 50


def iso(moment: float) -> str:
    """``moment`` as ISO 8601 UTC with microseconds, the form of ``meta.lastUpdated``.

    What ``datetime.fromtimestamp(moment, UTC).isoformat(...)`` gives (microseconds rounded half to
    even, as it rounds them), with the date and time of the whole second formatted once per second.
    """
    fraction, whole = math.modf(moment)
    seconds, micros = int(whole), round(fraction * 1_000_000)
    if micros >= 1_000_000:
        seconds, micros = seconds + 1, micros - 1_000_000
    elif micros < 0:
        seconds, micros = seconds - 1, micros + 1_000_000
    global _last_second
    last = _last_second  # one read: another thread may replace it meanwhile, never half of it
    if last[0] != seconds:
        last = _last_second = (seconds, datetime.fromtimestamp(seconds, UTC).isoformat()[:-6] + ".")
    return f"{last[1]}{_DIGITS[micros // 1000]}{_DIGITS[micros % 1000]}Z"


# The last whole second formatted, up to its decimal point; and 0-999 as three digits each.
_last_second: tuple[int | None, str] = (None, "")
_DIGITS = tuple(f"{n:03d}" for n in range(1000))


def purge_time(exp: int, refresh_exp: int | None, has_refresh: bool, retention: int) -> int | None:
    """When a Session may be purged: ``retention`` after its last token expires (never, if that never)."""
    if has_refresh and refresh_exp is None:
        return None
    return max(exp, refresh_exp or 0) + retention


@dataclass(frozen=True, slots=True)
class TokenHashes:
    """What a Session keeps of freshly issued tokens: their hashes and expiry times."""

    access_hash: str
    expires_at: int
    refresh_hash: str | None
    refresh_expires_at: int | None


class Session:
    """A Session body and the rules that read and change it. Changes return a new body."""

    __slots__ = ("body",)

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    @classmethod
    def new(
        cls,
        *,
        session_id: str,
        client_id: str,
        issuer: str,
        now: int,
        audience: str | None,
        scope: list[str] | None,
        tokens: TokenHashes,
        retention: int,
        auth_method: str | None = None,
    ) -> Session:
        body: dict[str, Any] = {
            "resourceType": SESSION,
            "id": session_id,
            "type": "client_credentials",
            "client": {"id": client_id, "resourceType": CLIENT},
            "jti": session_id,
            "iss": issuer,
            "start": iso(now),
            "active": True,
        }
        if auth_method is not None:
            # How the client authenticated: client_secret_basic, client_secret_post or private_key_jwt.
            body["auth_method"] = auth_method
        if audience is not None:
            body["audience"] = audience
        if scope:
            body["scope"] = scope
        return cls(_with_tokens(body, tokens, retention))

    @classmethod
    def new_console(
        cls, *, session_id: str, client_id: str, cookie_hash: str, now: float, idle: int, retention: int
    ) -> Session:
        """A console sign-in: it expires ``idle`` seconds after its last use (see ``used``)."""
        body: dict[str, Any] = {
            "resourceType": SESSION,
            "id": session_id,
            "type": CONSOLE,
            "client": {"id": client_id, "resourceType": CLIENT},
            "start": iso(now),
            "active": True,
            "console_token": cookie_hash,
        }
        return cls(_idle_until(body, now, idle, retention))

    @property
    def id(self) -> str:
        return str(self.body["id"])

    @property
    def is_console(self) -> bool:
        return self.body.get("type") == CONSOLE

    def holds_console(self, hashed: str) -> bool:
        """A console Session whose cookie has the hash ``hashed``."""
        return self.is_console and _same(self.body.get("console_token"), hashed)

    def used(self, now: float, idle: int, retention: int) -> dict[str, Any]:
        """The body of this console Session used at ``now``: it now expires ``idle`` seconds later."""
        return _idle_until(_editable(self.body), now, idle, retention)

    @property
    def client_id(self) -> str | None:
        client = self.body.get("client")
        client_id = client.get("id") if isinstance(client, dict) else None
        return client_id if isinstance(client_id, str) else None

    @property
    def active(self) -> bool:
        """Not closed (an expired Session is still active until closed or purged)."""
        return self.body.get("active") is True

    @property
    def scope(self) -> list[str] | None:
        scope = self.body.get("scope")
        return scope if isinstance(scope, list) else None

    @property
    def audience(self) -> str | None:
        audience = self.body.get("audience")
        return audience if isinstance(audience, str) else None

    def access_expired(self, now: float) -> bool:
        exp = self.body.get("exp", 0)
        return not isinstance(exp, int | float) or exp <= now

    def refresh_expired(self, now: float) -> bool:
        exp = self.body.get("refresh_token_exp")
        return isinstance(exp, int) and exp <= now

    def is_active(self, now: float) -> bool:
        """Open, and its access token not yet expired."""
        return self.active and not self.access_expired(now)

    def holds_access(self, hashed: str) -> bool:
        """``hashed`` is the hash of the current access token (compared in constant time)."""
        return _same(self.body.get("access_token"), hashed)

    def holds_refresh(self, hashed: str) -> bool:
        """``hashed`` is the hash of the current refresh token."""
        return _same(self.body.get("refresh_token"), hashed)

    def holds(self, hashed: str) -> bool:
        """``hashed`` is the hash of the current access or refresh token."""
        return self.holds_access(hashed) or self.holds_refresh(hashed)

    def rotated_away(self, hashed: str) -> bool:
        """``hashed`` is a refresh token this Session already rotated away (its reuse means a leak)."""
        history = self.body.get("refresh_token_history", ())
        return any(isinstance(old, str) and hmac.compare_digest(old, hashed) for old in history)

    def just_rotated(self, hashed: str, now: float, grace: int) -> bool:
        """``hashed`` is the refresh token the last refresh replaced, and that was at most ``grace``
        seconds ago: a concurrent refresh that lost the race, not a leak."""
        history = self.body.get("refresh_token_history")
        last = self.body.get("last_refresh")
        return (
            isinstance(history, list)
            and bool(history)
            and _same(history[0], hashed)
            and isinstance(last, int | float)
            and now - last <= grace
        )

    def close(self, reason: str, now: float, retention: int) -> dict[str, Any]:
        """The body of this Session closed at ``now``: inactive, with ``end``, purged after ``retention``."""
        body = _editable(self.body)
        body.update(active=False, end=iso(now), end_reason=reason, purge_after=int(now) + retention)
        return body

    def rotate_refresh(
        self, presented: str, tokens: TokenHashes, scope: list[str] | None, now: float, retention: int
    ) -> dict[str, Any]:
        """The body with new tokens and the ``scope`` they were granted, ``presented`` (the old refresh
        hash) remembered as rotated away."""
        body = _editable(self.body)
        if scope:
            body["scope"] = scope
        else:
            body.pop("scope", None)
        body["refresh_token_history"] = [presented, *self.body.get("refresh_token_history", ())][
            :REFRESH_HISTORY
        ]
        body["last_refresh"] = now
        return _with_tokens(body, tokens, retention)

    def public_view(self) -> dict[str, Any]:
        """The Session without its token hashes."""
        return {key: value for key, value in self.body.items() if key not in HIDDEN_FIELDS}


def _same(stored: Any, hashed: str) -> bool:
    return isinstance(stored, str) and hmac.compare_digest(stored, hashed)


def _editable(body: dict[str, Any]) -> dict[str, Any]:
    """A copy to write back: ``meta`` is the store's to set."""
    return {key: value for key, value in body.items() if key != "meta"}


def _idle_until(body: dict[str, Any], now: float, idle: int, retention: int) -> dict[str, Any]:
    body["exp"] = int(now) + idle
    body["last_used"] = iso(now)
    body["purge_after"] = body["exp"] + retention
    return body


def _with_tokens(body: dict[str, Any], tokens: TokenHashes, retention: int) -> dict[str, Any]:
    body["exp"] = tokens.expires_at
    body["access_token"] = tokens.access_hash
    for name in ("refresh_token", "refresh_token_exp", "purge_after"):
        body.pop(name, None)
    if tokens.refresh_hash is not None:
        body["refresh_token"] = tokens.refresh_hash
        if tokens.refresh_expires_at is not None:
            body["refresh_token_exp"] = tokens.refresh_expires_at
    purge_after = purge_time(
        tokens.expires_at, tokens.refresh_expires_at, tokens.refresh_hash is not None, retention
    )
    if purge_after is not None:
        body["purge_after"] = purge_after
    return body
