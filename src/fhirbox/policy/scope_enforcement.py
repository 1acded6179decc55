"""SMART scopes enforced: the authorization step that runs before AccessPolicies on policy routes.

A bearer token whose scope holds at least one ``system/`` scope, or whose Client's ``scope`` does
(``Principal.smart_scoped``), may make a resource interaction only when one of its SMART scopes covers
it (a token granted none of them: none); AccessPolicies must allow it as well (the pipeline runs both).
Other tokens, Basic credentials and the root client are not affected.

What the route alone decides is checked here: the interaction's permission letter on the route's type
(``c`` create, ``r`` read, ``u`` update, ``d`` delete, ``s`` search). What depends on the stored
resource cannot be decided before the handler runs: whether a PUT creates or updates, and whether a
resource matches a scope's ``?param=value`` restrictions. For those the request carries a
``ResourceLimit``, which the REST handlers apply to the resources they read and, for writes, inside
the store's atomic ``mutate`` (so no concurrent write can slip between the check and the change).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fhirbox.auth.principal import Principal
from fhirbox.http.request import Request
from fhirbox.http.routing import Interaction, Route
from fhirbox.oauth.bearer import insufficient_scope
from fhirbox.oauth.smart_scopes import SmartScope, holds_smart_scope, scope_needed, smart_scopes_of
from fhirbox.storage.base import Filter, matches_filters

# The SMART permission letter of each interaction; a PUT (upsert) needs ``c`` or ``u``.
LETTERS: dict[Interaction, str] = {
    "create": "c",
    "read": "r",
    "update": "u",
    "upsert": "cu",
    "delete": "d",
    "search": "s",
}

Restriction = tuple[Filter, ...]


def restriction_of(scope: SmartScope) -> Restriction:
    """A scope's ``?param=value`` restrictions as search filters (all must hold)."""
    return tuple(Filter(tuple(name.split(".")), value) for name, value in sorted(scope.params))


@dataclass(frozen=True, slots=True)
class ResourceLimit:
    """What a SMART-scoped request may touch of its resource type.

    For each interaction: the alternative restrictions (one per scope granting it); an empty
    restriction means every resource of the type, no alternative means none.
    """

    resource_type: str
    scopes: tuple[SmartScope, ...]

    def restrictions(self, interaction: Interaction) -> list[Restriction]:
        letter = LETTERS[interaction]
        return [restriction_of(s) for s in self.scopes if s.allows(self.resource_type, letter)]

    def may(self, interaction: Interaction) -> bool:
        """Whether some scope grants ``interaction`` on some resources of the type."""
        return any(letter in s.permissions for s in self.scopes for letter in LETTERS[interaction])

    def check(self, interaction: Interaction, resource: dict[str, Any]) -> None:
        """Return when a scope grants ``interaction`` on ``resource`` (as clients see it: fields the
        server hides never match a restriction); 403 ``insufficient_scope`` otherwise."""
        if any(matches_filters(resource, r) for r in self.restrictions(interaction)):
            return
        raise insufficient_scope(
            f"The token's SMART scopes do not cover {interaction} of this {self.resource_type}",
            scope_needed(self.resource_type, LETTERS[interaction]),
        )

    def search_filters(self, requested: Sequence[Filter], hidden: Sequence[str]) -> Restriction:
        """The filters a search must add so it finds only resources a scope covers.

        An unrestricted scope adds nothing. Otherwise one restricted scope is used (a search is one
        conjunction of filters): the first whose restrictions the query already asks for, else the
        first granted. Restrictions on fields the server hides are never used.
        """
        usable = [r for r in self.restrictions("search") if not any(f.path[0] in hidden for f in r)]
        if not usable:
            raise insufficient_scope(
                f"The token's SMART scopes do not cover search of {self.resource_type}",
                scope_needed(self.resource_type, "s"),
            )
        asked = set(requested)
        for restriction in usable:
            if asked.issuperset(restriction):
                return restriction
        return usable[0]


class ScopeAuthorizer:
    """Checks a SMART-scoped bearer token's scopes against the route's interaction."""

    async def authorize(self, request: Request, principal: Principal, route: Route) -> None:
        if principal.is_root or not (principal.smart_scoped or holds_smart_scope(principal.scope)):
            return
        resource_type = request.path_params.get("type")
        if route.interaction is None or resource_type is None:
            # No such policy route exists today; a new one must say what it does before SMART-scoped
            # tokens may use it.
            raise insufficient_scope("SMART-scoped tokens may only make FHIR resource interactions", None)
        scopes = tuple(s for s in smart_scopes_of(principal.scope) if s.resource_type in ("*", resource_type))
        limit = ResourceLimit(resource_type, scopes)
        if not limit.may(route.interaction):
            raise insufficient_scope(
                f"The token's SMART scopes do not cover {route.interaction} of {resource_type}",
                scope_needed(resource_type, LETTERS[route.interaction]),
            )
        request.resource_limit = limit
