"""The ``matcho`` engine: Aidbox's Matcho pattern language, compiled once into closures.

The pattern language:

- a scalar (string, number, boolean, null) matches an equal value (``true`` never equals ``1``);
- an object matches an object having at least its keys, each value matching recursively (a missing
  key matches as null);
- an array matches an array starting with its elements in order (an ordered prefix);
- ``"#regex"`` matches a string the regular expression matches as a whole (anchored), run on RE2
  (linear time; ``fhirbox.regex``);
- ``"present?"`` matches any non-null value, ``"nil?"`` null or a missing key, ``"not-blank?"`` a string
  with a non-space character;
- ``".path.to.value"`` matches the value at that path of the request object (never a missing one);
- operators, as keys of an object: ``$enum`` (one of these scalars), ``$one-of`` (one of these
  patterns; alone in its object), ``$contains`` (an array with an element matching), ``$every``
  (an array whose elements all match), ``$not`` (does not match), ``$present-all`` (an array with
  a match for each of these patterns, in any order), ``$length`` (an array or string of this
  length), ``$reference`` (a Reference or ``"Type/id"`` string, read as ``{resourceType, id}``).
  Operators may sit next to ordinary keys and each other; all must hold.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import PolicyError, Rule, field_path
from fhirbox.regex import UnsupportedRegex, compile_fullmatch

Matcher = Callable[[Any, RequestObject], bool]
_MAPPINGS = (dict, RequestObject)
_BODY_KEYS = frozenset({"body", "resource"})
_MAX_DEPTH = 64


@dataclass(frozen=True, slots=True)
class Node:
    """A compiled pattern: ``match(value, request)``; ``children`` are an object pattern's keys."""

    match: Matcher
    children: tuple[tuple[str, Node], ...] = ()


class MatchoRule(Rule):
    __slots__ = ("_match", "needs_body", "node")
    engine = "matcho"

    def __init__(self, node: Node, needs_body: bool) -> None:
        self.node = node
        self._match = node.match
        self.needs_body = needs_body

    def check(self, request: RequestObject) -> bool:
        return self._match(request, request)

    def explain(self, request: RequestObject) -> dict[str, Any]:
        failed = first_failure(self.node, request, request, "")
        result: dict[str, Any] = {"engine": self.engine, "result": failed is None}
        if failed is not None:
            result["failed-at"] = failed or "(the whole request)"
        return result


def compile_matcho(rule: dict[str, Any], where: str) -> Rule:
    """Compile ``rule["matcho"]``, an object pattern over the request object."""
    pattern = rule.get("matcho")
    if not isinstance(pattern, dict):
        raise PolicyError(f"{field_path(where, 'matcho')}: must be an object pattern over the request")
    node = compile_pattern(pattern, field_path(where, "matcho"))
    return MatchoRule(node, _mentions_body(pattern))


def first_failure(node: Node, value: Any, request: RequestObject, path: str) -> str | None:
    """The path of the first part of ``value`` that does not match ``node``, or None on a match."""
    if node.match(value, request):
        return None
    if node.children and isinstance(value, _MAPPINGS):
        for key, child in node.children:
            inner = first_failure(child, value.get(key), request, f"{path}.{key}" if path else key)
            if inner is not None:
                return inner
    return path


def compile_pattern(pattern: Any, where: str, depth: int = 0) -> Node:
    """Compile one pattern; ``where`` names it in errors (``matcho.params.resource/type``)."""
    if depth > _MAX_DEPTH:
        raise PolicyError(f"{where}: pattern is nested too deeply")
    if isinstance(pattern, dict):
        return _object(pattern, where, depth)
    if isinstance(pattern, list):
        return Node(_prefix([compile_pattern(p, f"{where}[{i}]", depth + 1) for i, p in enumerate(pattern)]))
    if isinstance(pattern, str):
        return Node(_string(pattern, where))
    if isinstance(pattern, bool):
        return Node(lambda value, request: value is pattern)
    if isinstance(pattern, int | float):
        return Node(lambda value, request: not isinstance(value, bool) and value == pattern)
    if pattern is None:
        return Node(lambda value, request: value is None)
    raise PolicyError(f"{where}: unsupported pattern of type {type(pattern).__name__}")


# -- objects ---------------------------------------------------------------------------------------
def _object(pattern: dict[str, Any], where: str, depth: int) -> Node:
    if "$one-of" in pattern and len(pattern) > 1:
        raise PolicyError(f"{where}: $one-of cannot be combined with other keys; repeat them in each option")
    children: list[tuple[str, Node]] = []
    operators: list[Matcher] = []
    for key, sub in pattern.items():
        if not isinstance(key, str):
            raise PolicyError(f"{where}: object keys must be strings, got {key!r}")
        if key.startswith("$"):
            factory = _OPERATORS.get(key)
            if factory is None:
                known = ", ".join(_OPERATORS)
                raise PolicyError(f"{where}: unknown matcho operator {key!r} (known: {known})")
            operators.append(factory(sub, f"{where}.{key}", depth + 1))
        else:
            children.append((key, compile_pattern(sub, f"{where}.{key}", depth + 1)))
    keyed = tuple((key, node.match) for key, node in children)
    checks = tuple(operators)

    if not keyed:
        if len(checks) == 1:
            return Node(checks[0])

        def match_operators(value: Any, request: RequestObject) -> bool:
            for check in checks:
                if not check(value, request):
                    return False
            return True

        return Node(match_operators)

    def match_object(value: Any, request: RequestObject) -> bool:
        if not isinstance(value, _MAPPINGS):
            return False
        get = value.get
        for key, match in keyed:
            if not match(get(key), request):
                return False
        for check in checks:
            if not check(value, request):
                return False
        return True

    return Node(match_object, tuple(children))


def _prefix(nodes: list[Node]) -> Matcher:
    matchers = tuple(node.match for node in nodes)
    size = len(matchers)

    def match_prefix(value: Any, request: RequestObject) -> bool:
        if not isinstance(value, list) or len(value) < size:
            return False
        for match, item in zip(matchers, value, strict=False):
            if not match(item, request):
                return False
        return True

    return match_prefix


# -- strings ---------------------------------------------------------------------------------------
def _present(value: Any, request: RequestObject) -> bool:
    return value is not None


def _nil(value: Any, request: RequestObject) -> bool:
    return value is None


def _not_blank(value: Any, request: RequestObject) -> bool:
    return isinstance(value, str) and not value.isspace() and value != ""


_SPECIAL: dict[str, Matcher] = {"present?": _present, "nil?": _nil, "not-blank?": _not_blank}


def _string(pattern: str, where: str) -> Matcher:
    special = _SPECIAL.get(pattern)
    if special is not None:
        return special
    if pattern.startswith("#"):
        try:
            fullmatch = compile_fullmatch(pattern[1:])
        except UnsupportedRegex as exc:
            raise PolicyError(f"{where}: invalid regular expression {pattern[1:]!r}: {exc}") from None
        return lambda value, request: isinstance(value, str) and fullmatch(value)
    if pattern.startswith("."):
        path = tuple(pattern[1:].split("."))
        if not all(path):
            raise PolicyError(f"{where}: invalid request path {pattern!r} (use .key.key)")

        def match_reference(value: Any, request: RequestObject) -> bool:
            expected = resolve(request, path)
            return expected is not None and same(value, expected)

        return match_reference
    return lambda value, request: value == pattern


def resolve(request: RequestObject, path: tuple[str, ...]) -> Any:
    """The value at ``path`` in the request object; None when any step is missing."""
    value: Any = request.get(path[0])
    for key in path[1:]:
        if isinstance(value, _MAPPINGS):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def same(value: Any, expected: Any) -> bool:
    """Equality that, unlike Python's, never confuses ``true`` with ``1``."""
    if isinstance(value, bool) or isinstance(expected, bool):
        return value is expected
    return bool(value == expected)


# -- operators -------------------------------------------------------------------------------------
def _enum(argument: Any, where: str, depth: int) -> Matcher:
    if not isinstance(argument, list) or not argument:
        raise PolicyError(f"{where}: must be a non-empty array of strings, numbers or booleans")
    if any(isinstance(item, dict | list) for item in argument):
        raise PolicyError(f"{where}: may hold only strings, numbers, booleans and null; use $one-of")
    if all(isinstance(item, str) for item in argument):
        strings = frozenset(argument)
        return lambda value, request: isinstance(value, str) and value in strings
    items = tuple(argument)
    return lambda value, request: any(same(value, item) for item in items)


def _patterns(argument: Any, where: str, depth: int) -> tuple[Matcher, ...]:
    if not isinstance(argument, list) or not argument:
        raise PolicyError(f"{where}: must be a non-empty array of patterns")
    return tuple(compile_pattern(p, f"{where}[{i}]", depth + 1).match for i, p in enumerate(argument))


def _one_of(argument: Any, where: str, depth: int) -> Matcher:
    options = _patterns(argument, where, depth)
    return lambda value, request: any(match(value, request) for match in options)


def _contains(argument: Any, where: str, depth: int) -> Matcher:
    match = compile_pattern(argument, where, depth).match
    return lambda value, request: isinstance(value, list) and any(match(item, request) for item in value)


def _every(argument: Any, where: str, depth: int) -> Matcher:
    match = compile_pattern(argument, where, depth).match
    return lambda value, request: isinstance(value, list) and all(match(item, request) for item in value)


def _not(argument: Any, where: str, depth: int) -> Matcher:
    match = compile_pattern(argument, where, depth).match
    return lambda value, request: not match(value, request)


def _present_all(argument: Any, where: str, depth: int) -> Matcher:
    wanted = _patterns(argument, where, depth)

    def match_present_all(value: Any, request: RequestObject) -> bool:
        if not isinstance(value, list):
            return False
        return all(any(match(item, request) for item in value) for match in wanted)

    return match_present_all


def _length(argument: Any, where: str, depth: int) -> Matcher:
    if isinstance(argument, bool) or not isinstance(argument, int) or argument < 0:
        raise PolicyError(f"{where}: must be a non-negative integer")
    return lambda value, request: isinstance(value, list | str) and len(value) == argument


def _reference(argument: Any, where: str, depth: int) -> Matcher:
    match = compile_pattern(argument, where, depth).match

    def match_reference(value: Any, request: RequestObject) -> bool:
        return match(parse_reference(value), request)

    return match_reference


def parse_reference(value: Any) -> dict[str, Any] | None:
    """``"Patient/pid"`` or ``{reference: "Patient/pid"}`` as ``{resourceType: Patient, id: pid}``."""
    if isinstance(value, dict):
        if "reference" not in value:
            return value
        value = value["reference"]
    if not isinstance(value, str):
        return None
    type_, sep, id_ = value.rstrip("/").rpartition("/")
    if not sep or not type_:
        return None
    return {"resourceType": type_.rpartition("/")[2], "id": id_}


_OPERATORS: dict[str, Callable[[Any, str, int], Matcher]] = {
    "$enum": _enum,
    "$one-of": _one_of,
    "$contains": _contains,
    "$every": _every,
    "$not": _not,
    "$present-all": _present_all,
    "$length": _length,
    "$reference": _reference,
}


def _mentions_body(pattern: Any) -> bool:
    """Whether the pattern may read ``body``/``resource`` (conservative: any such key or path)."""
    if isinstance(pattern, dict):
        return any(key in _BODY_KEYS or _mentions_body(sub) for key, sub in pattern.items())
    if isinstance(pattern, list):
        return any(_mentions_body(sub) for sub in pattern)
    if isinstance(pattern, str):
        return pattern.startswith((".body", ".resource"))
    return False
