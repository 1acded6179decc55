"""An AccessPolicy resource compiled into an immutable evaluator, or a ``PolicyError`` naming the problem.

Compiling is the only place a policy's fields are interpreted: the write check (422 at write time),
the policy cache and the debugging tools all go through ``compile_policy``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fhirbox.http.errors import HttpError
from fhirbox.models.client import CLIENT
from fhirbox.policy.engines.allow import compile_allow
from fhirbox.policy.engines.complex import compile_complex
from fhirbox.policy.engines.json_schema import compile_json_schema
from fhirbox.policy.engines.matcho import compile_matcho
from fhirbox.policy.request_object import RequestObject
from fhirbox.policy.rule import PolicyError, Rule, field_path

log = logging.getLogger("fhirbox.policy")

ACCESS_POLICY = "AccessPolicy"


async def check_access_policy(body: dict[str, Any]) -> None:
    """The write rule for AccessPolicies: refuse (422) one that cannot be compiled, naming the field."""
    try:
        compile_policy(body)
    except PolicyError as exc:
        raise HttpError(422, f"Invalid AccessPolicy: {exc}") from None


def compile_rule(rule: Any, where: str = "") -> Rule:
    """Compile one rule: an object with ``engine`` and that engine's fields."""
    if not isinstance(rule, dict):
        raise PolicyError(f"{where or 'policy'}: a rule must be an object with 'engine'")
    engine = rule.get("engine")
    if engine is None:
        raise PolicyError(f"{field_path(where, 'engine')}: required; use one of {ENGINE_NAMES}")
    compiler = ENGINES.get(engine) if isinstance(engine, str) else None
    if compiler is None:
        raise PolicyError(
            f"{field_path(where, 'engine')}: unknown engine {engine!r}; use one of {ENGINE_NAMES}"
        )
    return compiler(rule, where)


ENGINES: dict[str, Callable[[dict[str, Any], str], Rule]] = {
    "allow": compile_allow,
    "matcho": compile_matcho,
    "json-schema": compile_json_schema,
    "complex": lambda rule, where: compile_complex(rule, where, compile_rule),
}
ENGINE_NAMES = ", ".join(ENGINES)


@dataclass(frozen=True, slots=True)
class Links:
    """Whom a policy applies to: everyone (no ``link``) or the listed Clients."""

    is_global: bool
    clients: frozenset[str]


def parse_links(link: Any) -> Links:
    """Read ``link``: ``{resourceType: Client, id}`` or ``{reference: "Client/<id>"}`` items.

    Links to other resource types (User, Operation) are kept valid but grant no Client anything.
    As in Aidbox, where empty values are dropped, an empty ``link`` is the same as none: global.
    """
    if link is None or link == []:
        return Links(True, frozenset())
    if not isinstance(link, list):
        raise PolicyError("link: must be an array of references like {resourceType: Client, id: x}")
    clients: set[str] = set()
    for index, item in enumerate(link):
        target = _link_target(item)
        if target is None:
            raise PolicyError(
                f"link[{index}]: must be {{resourceType: Client, id: <id>}} or {{reference: Client/<id>}}"
            )
        type_, id_ = target
        if type_ == CLIENT:
            clients.add(id_)
    return Links(False, frozenset(clients))


def _link_target(item: Any) -> tuple[str, str] | None:
    if not isinstance(item, dict):
        return None
    reference = item.get("reference")
    if reference is not None:
        if not isinstance(reference, str):
            return None
        ref_type, sep, ref_id = reference.partition("/")
        return (ref_type, ref_id) if sep and ref_type and ref_id and "/" not in ref_id else None
    type_, id_ = item.get("resourceType"), item.get("id")
    if isinstance(type_, str) and type_ and isinstance(id_, str) and id_:
        return type_, id_
    return None


@dataclass(frozen=True, slots=True)
class CompiledPolicy:
    """A stored AccessPolicy ready to evaluate."""

    id: str
    rule: Rule
    links: Links

    @property
    def needs_body(self) -> bool:
        return self.rule.needs_body

    def allows(self, request: RequestObject) -> bool:
        """Whether the policy passes; a failure inside a rule counts as a denial, never an error."""
        try:
            return self.rule.check(request)
        except Exception:
            log.exception("AccessPolicy/%s failed to evaluate; treating it as a denial", self.id)
            return False


def compile_policy(body: dict[str, Any]) -> CompiledPolicy:
    """Compile an AccessPolicy resource; raises ``PolicyError`` for anything it cannot enforce."""
    links = parse_links(body.get("link"))
    rule = compile_rule(body)
    return CompiledPolicy(str(body.get("id", "")), rule, links)
