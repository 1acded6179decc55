"""AccessPolicy authorization: every authenticated API request is allowed only by a passing policy.

``install`` puts the policy authorizer into the pipeline, rejects AccessPolicies that cannot be
compiled (422 at write time) and adds ``POST /auth/test-policy``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fhirbox.http.errors import HttpError
from fhirbox.http.routing import Route
from fhirbox.policy.authorizer import PolicyAuthorizer
from fhirbox.policy.cache import PolicyCache
from fhirbox.policy.compile import ACCESS_POLICY, compile_policy
from fhirbox.policy.rule import PolicyError
from fhirbox.policy.tester import PolicyTester

if TYPE_CHECKING:
    from fhirbox.app import App


async def check_access_policy(body: dict[str, Any]) -> None:
    """Refuse (422) an AccessPolicy that cannot be compiled, naming the field at fault."""
    try:
        compile_policy(body)
    except PolicyError as exc:
        raise HttpError(422, f"Invalid AccessPolicy: {exc}") from None


def install(app: App) -> None:
    cache = PolicyCache(app.store)
    app.pipeline.authorizer = PolicyAuthorizer(cache)
    app.rules.on_write(ACCESS_POLICY, check_access_policy)
    app.router.add("POST", "/auth/test-policy", Route(PolicyTester(app.store).handle, "test-policy"))
    app.on_start.append(cache.refresh)
