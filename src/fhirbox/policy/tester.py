"""``POST /auth/test-policy`` (a root-only route): evaluate a policy against a request object you give.

As in Aidbox, the body is ``{request: {...}, policy: {...}}``. The request may name ``client-id``
(the stored Client is filled in as ``client``) and carry ``headers.authorization: Bearer <jwt>``
(the claims are filled in as ``jwt``; the token is parsed, not verified, since this is a debugging
aid). ``policy`` is an AccessPolicy body, or ``{id}`` of a stored one. The answer says whether the
policy passes and which engine and which part decided. Nothing is written.
"""

from __future__ import annotations

from typing import Any

import jwt
import orjson

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, render
from fhirbox.models.client import CLIENT, Client
from fhirbox.policy.compile import ACCESS_POLICY, compile_policy
from fhirbox.policy.request_object import StaticRequest
from fhirbox.policy.rule import PolicyError
from fhirbox.storage.base import Store


class PolicyTester:
    def __init__(self, store: Store) -> None:
        self.store = store

    async def handle(self, request: Request, principal: Principal | None) -> Response:
        document = await request.document()
        if not isinstance(document, dict):
            raise HttpError(422, "The body must be an object {request: {...}, policy: {...}}")
        given = document.get("request")
        if not isinstance(given, dict):
            raise HttpError(422, "request: required, an object such as {request-method: get, uri: /Patient}")
        policy = await self.policy(document.get("policy"))
        request_object = await self.request_object(given)
        try:
            compiled = compile_policy(policy)
        except PolicyError as exc:
            raise HttpError(422, f"Invalid AccessPolicy: {exc}") from None
        explained = compiled.rule.explain(StaticRequest(request_object))
        result = {"eval-result": explained.pop("result"), **explained}
        return render(request, 200, {"request": request_object, "policy": policy, "result": result})

    async def policy(self, given: Any) -> dict[str, Any]:
        if not isinstance(given, dict):
            raise HttpError(422, "policy: required, an AccessPolicy body or {id: <stored policy id>}")
        if "engine" in given or not isinstance(given.get("id"), str):
            return given
        stored = await self.store.read(ACCESS_POLICY, given["id"])
        if stored is None or stored.deleted:
            raise HttpError(422, f"policy: no AccessPolicy/{given['id']}")
        return stored.body

    async def request_object(self, given: dict[str, Any]) -> dict[str, Any]:
        """The request object to evaluate: ``given`` with the client and JWT claims filled in."""
        result = dict(given)
        method = result.get("request-method")
        if isinstance(method, str):
            result["request-method"] = method.lower()
        client_id = result.pop("client-id", None)
        if client_id is not None and "client" not in result:
            if not isinstance(client_id, str):
                raise HttpError(422, "client-id: must be a string")
            stored = await self.store.read(CLIENT, client_id)
            if stored is None or stored.deleted:
                raise HttpError(422, f"client-id: no Client/{client_id}")
            result["client"] = Client(stored).public_view()
        headers = result.get("headers")
        if isinstance(headers, dict):
            authorization = headers.get("authorization")
            result["headers"] = {k: v for k, v in headers.items() if k != "authorization"}
            if "jwt" not in result and isinstance(authorization, str):
                claims = unverified_claims(authorization)
                if claims is not None:
                    result["jwt"] = claims
        return result


def unverified_claims(authorization: str) -> dict[str, Any] | None:
    """The claims of a ``Bearer <jwt>`` header, unverified; None when it is not a JWT."""
    scheme, _, token = authorization.strip().partition(" ")
    if scheme.lower() != "bearer" or token.count(".") != 2:
        return None
    try:
        claims = jwt.decode(token.strip(), options={"verify_signature": False})
        # What orjson cannot write back (an integer past 64 bits, nesting past 255) is not a JWT here.
        orjson.dumps(claims)
    except (jwt.PyJWTError, RecursionError, TypeError):
        return None
    return claims if isinstance(claims, dict) else None
