"""What every engine compiles a rule into, and the error that rejects a rule."""

from __future__ import annotations

from typing import Any

from fhirbox.policy.request_object import RequestObject


class PolicyError(ValueError):
    """A rule that cannot be compiled; the message names the field and the problem."""


class Rule:
    """A compiled, immutable rule of one engine.

    ``check`` is the fast path run on every request and never raises for any request object;
    ``explain`` evaluates the same way and says which part decided (for debugging tools).
    ``needs_body`` is True when the rule may look at the body of a write.
    """

    __slots__ = ()
    engine: str = ""
    needs_body: bool = False

    def check(self, request: RequestObject) -> bool:
        raise NotImplementedError

    def explain(self, request: RequestObject) -> dict[str, Any]:
        return {"engine": self.engine, "result": self.check(request)}


def field_path(where: str, name: str) -> str:
    """``where.name``, or ``name`` at the top of a policy: how errors name the field at fault."""
    return f"{where}.{name}" if where else name
