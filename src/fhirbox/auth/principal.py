"""The authenticated caller of a request."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Principal:
    """A client authenticated by Basic credentials or by a bearer token of one of its Sessions."""

    client_id: str
    client: dict[str, Any]
    is_root: bool = False
    session: dict[str, Any] | None = None
    jwt: dict[str, Any] | None = None
    scope: tuple[str, ...] = field(default_factory=tuple)
    # Whether SMART scopes limit this principal's resource interactions (``scope_enforcement``): a
    # bearer token whose scope, or whose Client's ``scope``, holds a ``system/`` scope.
    smart_scoped: bool = False
