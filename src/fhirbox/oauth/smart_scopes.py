"""SMART App Launch system scopes (HL7 SMART v2.2 §3 "Scopes and Launch Context"), as pure functions.

A SMART scope is any scope that starts with ``system/``:

- v1: ``system/<Type|*>.<read|write|*>``;
- v2: ``system/<Type|*>.<c?r?u?d?s?>`` (letters in that order), optionally followed by
  ``?param=value&...``, which restricts the resources the scope covers to those matching every
  ``param=value`` (a fhirbox search filter: a dotted path equal to a value).

v1 ``read`` means v2 ``rs``, ``write`` means ``cud`` and ``*`` means ``cruds``. One scope *covers*
another when its type is the same or ``*``, it has every permission letter of the other, and each of
its restrictions is one of the other's (fewer restrictions cover more). Scopes that do not start with
``system/`` are not SMART scopes: they keep their plain meaning (granted when listed as they are).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import parse_qsl

from fhirbox.models import TYPE_PATTERN
from fhirbox.storage.base import PATH_KEY

SYSTEM = "system/"
LETTERS = "cruds"
V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_V2_PERMISSIONS = re.compile(r"^c?r?u?d?s?\Z")

# Bounds on what a request (and a Client) may carry, so granting and checking stay cheap.
MAX_SCOPES = 100
MAX_SCOPE_LENGTH = 512
MAX_PARAMS = 8
MAX_PATH_KEYS = 16


class InvalidSmartScope(ValueError):
    """A ``system/`` scope that is not a well-formed SMART scope (the message says why)."""


@dataclass(frozen=True, slots=True)
class SmartScope:
    """A parsed SMART system scope."""

    text: str
    resource_type: str  # a resource type, or "*" for every type
    permissions: frozenset[str]  # letters of "cruds"
    params: frozenset[tuple[str, str]]  # (dotted path, value) restrictions, all of which must hold

    def covers(self, other: SmartScope) -> bool:
        """Whether granting ``self`` grants at least everything ``other`` asks for."""
        return (
            self.resource_type in ("*", other.resource_type)
            and self.permissions >= other.permissions
            and self.params <= other.params
        )

    def allows(self, resource_type: str, letter: str) -> bool:
        """Whether this scope grants ``letter`` on ``resource_type`` (on the resources its params match)."""
        return self.resource_type in ("*", resource_type) and letter in self.permissions


def is_smart_scope(scope: str) -> bool:
    """SMART scopes are told apart by their prefix; anything else keeps its plain meaning."""
    return scope.startswith(SYSTEM)


def parse_smart_scope(scope: str) -> SmartScope:
    """``scope`` parsed; ``InvalidSmartScope`` when it starts with ``system/`` but is malformed."""
    if len(scope) > MAX_SCOPE_LENGTH:
        raise InvalidSmartScope(f"a SMART scope is at most {MAX_SCOPE_LENGTH} characters")
    if not is_smart_scope(scope):
        raise InvalidSmartScope(f"{scope!r} does not start with {SYSTEM}")
    body, has_query, query = scope[len(SYSTEM) :].partition("?")
    resource_type, dot, permission = body.partition(".")
    if not dot:
        raise InvalidSmartScope(f"{scope!r} has no '.' between resource type and permissions")
    if resource_type != "*" and not TYPE_PATTERN.match(resource_type):
        raise InvalidSmartScope(f"{scope!r} names no resource type (use a type name or *)")
    if permission in V1_PERMISSIONS:
        if has_query:
            raise InvalidSmartScope(f"{scope!r}: only v2 scopes (cruds letters) may have ?param=value")
        letters = V1_PERMISSIONS[permission]
    elif permission and _V2_PERMISSIONS.match(permission):
        letters = permission
    else:
        raise InvalidSmartScope(
            f"{scope!r}: permissions are read, write, * (v1) or the letters c r u d s in that order (v2)"
        )
    params = _restrictions(scope, query) if has_query else frozenset()
    return SmartScope(scope, resource_type, frozenset(letters), params)


def _restrictions(scope: str, query: str) -> frozenset[tuple[str, str]]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True, max_num_fields=MAX_PARAMS)
    except ValueError:
        problem = f"write restrictions as ?param=value&... (at most {MAX_PARAMS})"
        raise InvalidSmartScope(f"{scope!r}: {problem}") from None
    if not pairs:
        raise InvalidSmartScope(f"{scope!r}: '?' must be followed by param=value restrictions")
    for name, value in pairs:
        keys = name.split(".")
        if (
            not value
            or name.startswith("_")
            or len(keys) > MAX_PATH_KEYS
            or not all(PATH_KEY.match(key) for key in keys)
        ):
            raise InvalidSmartScope(
                f"{scope!r}: each restriction is a dotted field path (not a _parameter) = a non-empty value"
            )
    return frozenset(pairs)


def granted_scopes(allowed: tuple[str, ...] | None, requested: list[str]) -> list[str]:
    """The requested scopes, once each, when ``allowed`` (a Client's ``scope``) covers every one.

    A SMART scope is covered by any allowed SMART scope that covers it (``system/*.read`` covers
    ``system/Patient.rs``); any other scope only by itself. ``InvalidSmartScope`` names a malformed
    SMART scope; ``LookupError`` names the scopes the client may not have.
    """
    wanted = list(dict.fromkeys(requested))
    if len(wanted) > MAX_SCOPES:
        raise InvalidSmartScope(f"at most {MAX_SCOPES} scopes may be requested")
    allowed = allowed or ()
    grantable = smart_scopes_of(tuple(allowed))
    missing = []
    for scope in wanted:
        if scope in allowed:
            continue
        if is_smart_scope(scope):
            asked = parse_smart_scope(scope)
            if any(have.covers(asked) for have in grantable):
                continue
        missing.append(scope)
    if missing:
        raise LookupError(" ".join(missing))
    return wanted


@lru_cache(maxsize=4096)
def smart_scopes_of(scopes: tuple[str, ...]) -> tuple[SmartScope, ...]:
    """The SMART scopes among ``scopes``, parsed; a malformed ``system/`` scope (stored before it was
    refused) grants nothing. Cached: a token's scope list is parsed once per process."""
    parsed = []
    for scope in scopes:
        if is_smart_scope(scope):
            try:
                parsed.append(parse_smart_scope(scope))
            except InvalidSmartScope:
                continue
    return tuple(parsed)


def holds_smart_scope(scopes: tuple[str, ...]) -> bool:
    """Whether a token's scope holds at least one ``system/`` scope: then SMART scopes are enforced."""
    return any(is_smart_scope(scope) for scope in scopes)


def scope_needed(resource_type: str, letters: str) -> str:
    """The scope that would cover an interaction needing ``letters`` on ``resource_type``."""
    return f"{SYSTEM}{resource_type}.{letters}"
