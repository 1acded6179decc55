"""The ``allow`` engine: the rule always passes."""

from __future__ import annotations

from typing import Any

from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import Rule


class AllowRule(Rule):
    __slots__ = ()
    engine = "allow"

    def check(self, request: RequestObject) -> bool:
        return True


def compile_allow(rule: dict[str, Any], where: str) -> Rule:
    """``engine: allow`` takes no other fields."""
    return AllowRule()
