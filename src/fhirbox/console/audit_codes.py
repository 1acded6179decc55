"""The audit trail's event codes the console counts and filters by (``AuditEvent.type.code``)."""

from __future__ import annotations

from fhirbox.models import audit_event as events

TOKEN_ISSUED = events.TOKEN_ISSUED
AUTH_FAILED = events.CLIENT_AUTH_FAILED

# The codes offered in the audit page's filter (any other can still be typed in).
KNOWN = (
    events.TOKEN_ISSUED,
    events.TOKEN_REFRESHED,
    events.REFRESH_TOKEN_REUSED,
    events.CLIENT_AUTH_FAILED,
    events.CLIENT_AUTH_THROTTLED,
    events.CLIENT_ASSERTION_REPLAYED,
    events.SESSION_CLOSED,
    events.CLIENT_CREATED,
    events.CLIENT_UPDATED,
    events.CLIENT_DELETED,
    events.ACCESS_POLICY_CREATED,
    events.ACCESS_POLICY_UPDATED,
    events.ACCESS_POLICY_DELETED,
    events.SIGNING_KEY_GENERATED,
    events.SIGNING_KEY_RETIRED,
)
OUTCOMES = {"0": "success", "4": "minor failure", "8": "serious failure"}
