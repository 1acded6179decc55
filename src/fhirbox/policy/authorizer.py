"""The authorization step of the pipeline: AccessPolicies decide every authenticated API request."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.routing import Route
from fhirbox.policy.cache import PolicyCache
from fhirbox.policy.compile import CompiledPolicy
from fhirbox.policy.request_object import WRITE_METHODS, RequestView


def _not_counted(result: str) -> None:
    return None


@dataclass(frozen=True, slots=True)
class Decision:
    """Whether a request is allowed, by which policy, and which policies were applicable."""

    allowed: bool
    policy: CompiledPolicy | None
    applicable: tuple[CompiledPolicy, ...]


class PolicyAuthorizer:
    """Root may do everything; any other client needs one applicable policy that passes.

    Applicable are the global policies (no ``link``) and those linked to the client. No passing policy
    means 403 with Aidbox's ``forbidden`` OperationOutcome. Unauthenticated requests never get here.
    """

    def __init__(self, cache: PolicyCache, count_decision: Callable[[str], None] = _not_counted) -> None:
        self.cache = cache
        # Told every decision of the pipeline: "root", "allowed" or "denied".
        self.count_decision = count_decision

    async def authorize(self, request: Request, principal: Principal, route: Route) -> None:
        if principal.is_root:
            self.count_decision("root")
            return
        if not (await self.decide(request, principal)).allowed:
            self.count_decision("denied")
            raise HttpError(403, "Forbidden")
        self.count_decision("allowed")

    async def decide(self, request: Request, principal: Principal) -> Decision:
        """The decision for ``principal`` making ``request`` (also what ``fhirbox policy check`` says)."""
        if principal.is_root:
            return Decision(True, None, ())
        applicable = await self.cache.for_client(principal.client_id)
        if applicable.policies:
            view = RequestView(request, principal)
            if applicable.needs_body and request.method in WRITE_METHODS:
                await view.load_body()
            for policy in applicable.policies:
                if policy.allows(view):
                    return Decision(True, policy, applicable.policies)
        return Decision(False, None, applicable.policies)
