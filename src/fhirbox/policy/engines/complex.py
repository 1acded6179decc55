"""The ``complex`` engine: ``and`` or ``or`` over nested rules of any engine, in order, short-circuit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import PolicyError, Rule, field_path

CompileRule = Callable[[Any, str], Rule]


class _Combination(Rule):
    __slots__ = ("needs_body", "rules")
    engine = "complex"

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules
        self.needs_body = any(rule.needs_body for rule in rules)


class AllOf(_Combination):
    __slots__ = ()

    def check(self, request: RequestObject) -> bool:
        for rule in self.rules:
            if not rule.check(request):
                return False
        return True

    def explain(self, request: RequestObject) -> dict[str, Any]:
        return _explain(self.rules, "and", request, decisive=False)


class AnyOf(_Combination):
    __slots__ = ()

    def check(self, request: RequestObject) -> bool:
        for rule in self.rules:
            if rule.check(request):
                return True
        return False

    def explain(self, request: RequestObject) -> dict[str, Any]:
        return _explain(self.rules, "or", request, decisive=True)


def _explain(
    rules: tuple[Rule, ...], operator: str, request: RequestObject, decisive: bool
) -> dict[str, Any]:
    """Evaluate like ``check`` and report each rule run; the last one run decided."""
    evaluated = []
    for index, rule in enumerate(rules):
        explained = rule.explain(request)
        evaluated.append(explained)
        if explained["result"] is decisive:
            return {
                "engine": "complex",
                "result": decisive,
                "decided-by": f"{operator}[{index}]",
                operator: evaluated,
            }
    return {
        "engine": "complex",
        "result": not decisive,
        "decided-by": f"all of {operator}",
        operator: evaluated,
    }


def compile_complex(rule: dict[str, Any], where: str, compile_rule: CompileRule) -> Rule:
    """Compile ``and`` or ``or`` (exactly one of them), a non-empty array of rules with ``engine``."""
    has_and, has_or = "and" in rule, "or" in rule
    if has_and and has_or:
        raise PolicyError(f"{where or 'policy'}: complex rules take 'and' or 'or', never both on one level")
    if not has_and and not has_or:
        raise PolicyError(f"{where or 'policy'}: complex rules need 'and' or 'or', an array of rules")
    operator = "and" if has_and else "or"
    items = rule[operator]
    where = field_path(where, operator)
    if not isinstance(items, list) or not items:
        raise PolicyError(f"{where}: must be a non-empty array of rules")
    rules = tuple(compile_rule(item, f"{where}[{index}]") for index, item in enumerate(items))
    return AllOf(rules) if operator == "and" else AnyOf(rules)
