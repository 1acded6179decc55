"""Errors that end a request, rendered as FHIR OperationOutcome resources."""

from __future__ import annotations

from typing import Any

# The FHIR issue code used as OperationOutcome.id for each status, as Aidbox answers.
ISSUE_CODES: dict[int, str] = {
    400: "invalid",
    401: "login",
    403: "forbidden",
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    408: "timeout",
    409: "conflict",
    410: "deleted",
    412: "conflict",
    413: "too-costly",
    415: "not-supported",
    422: "invalid",
    429: "throttled",
    500: "exception",
    503: "transient",
}


class HttpError(Exception):
    """An error answered to the client with ``status`` and an OperationOutcome body."""

    def __init__(
        self,
        status: int,
        diagnostics: str,
        *,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(diagnostics)
        self.status = status
        self.diagnostics = diagnostics
        self.code = code or ISSUE_CODES.get(status, "processing")
        self.headers = headers or {}


def operation_outcome(code: str, diagnostics: str, severity: str = "fatal") -> dict[str, Any]:
    """An OperationOutcome in Aidbox's shape: ``id`` is the issue code."""
    return {
        "resourceType": "OperationOutcome",
        "id": code,
        "text": {"status": "generated", "div": diagnostics},
        "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}],
    }
