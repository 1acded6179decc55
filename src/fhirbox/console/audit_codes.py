"""The audit trail's event codes the console counts and filters by (``AuditEvent.type.code``)."""

from __future__ import annotations

TOKEN_ISSUED = "token-issued"  # noqa: S105 - an event code, not a secret
AUTH_FAILED = "client-auth-failed"

# The codes offered in the audit page's filter (any other can still be typed into the URL).
KNOWN = (
    TOKEN_ISSUED,
    "token-refreshed",
    "refresh-token-reuse",
    AUTH_FAILED,
    "auth-throttled",
    "session-closed",
    "client-created",
    "client-updated",
    "client-deleted",
    "policy-created",
    "policy-updated",
    "policy-deleted",
    "key-rotated",
)
OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure"}
