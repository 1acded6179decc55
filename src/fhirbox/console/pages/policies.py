"""Access policies: list (with the clients each links), create and edit as YAML or JSON with the
API's errors marked at their line, delete, and "try it" through ``POST /auth/test-policy``.

``/auth/test-policy`` is a root route; the console calls it as the signed-in client like everything
else, so a non-root client's "try it" is refused with the API's 403 (it could otherwise read any
Client and policy through it)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import orjson

from fhirbox.auth.principal import Principal
from fhirbox.console.forms import read_form
from fhirbox.console.html import redirect
from fhirbox.console.lines import error_line
from fhirbox.console.pages import PAGE_SIZE, Pages, page_number
from fhirbox.console.pages.clients import links_client
from fhirbox.http.formats import dump_yaml
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router
from fhirbox.models import ID_PATTERN
from fhirbox.policy.compile import parse_links
from fhirbox.policy.rule import PolicyError

FORMATS = {"yaml": "text/yaml", "json": "application/json"}
EXAMPLE = """engine: matcho
matcho:
  request-method: get
  uri: /Patient
link:
  - {resourceType: Client, id: my-client}
"""


def linked_clients(policy: dict[str, Any]) -> list[str] | None:
    """The Client ids a policy links; None when it is global (applies to every client)."""
    try:
        links = parse_links(policy.get("link"))
    except PolicyError:
        return []
    return None if links.is_global else sorted(links.clients)


def policy_text(policy: dict[str, Any], fmt: str) -> str:
    body = {key: value for key, value in policy.items() if key not in ("meta", "resourceType")}
    if fmt == "json":
        return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode()
    return dump_yaml(body).decode()


class PolicyPages(Pages):
    def add_routes(self, router: Router) -> None:
        router.add("GET", "/ui/policies", Route(self.list, "console"))
        router.add("GET", "/ui/policies/new", Route(self.new, "console"))
        router.add("POST", "/ui/policies", Route(self.create, "console"))
        router.add("GET", "/ui/policies/try", Route(self.try_form, "console"))
        router.add("POST", "/ui/policies/try", Route(self.try_it, "console"))
        router.add("GET", "/ui/policies/{id}", Route(self.edit, "console"))
        router.add("POST", "/ui/policies/{id}", Route(self.save, "console"))
        router.add("POST", "/ui/policies/{id}/delete", Route(self.delete, "console"))

    async def list(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        page = page_number(request)
        answer = await self.api(request, principal).search(
            "AccessPolicy", [("_sort", "_id"), ("_count", str(PAGE_SIZE)), ("_page", str(page))]
        )
        if not answer.ok:
            return self.refused(request, principal, answer, "list AccessPolicies (GET /AccessPolicy)")
        rows = [(p, linked_clients(p)) for p in answer.entries]
        return self.render(
            request,
            principal,
            "policies.html",
            rows=rows,
            total=answer.total,
            page=page,
            page_size=PAGE_SIZE,
            deleted=request.query_value("deleted"),
        )

    def editor(
        self,
        request: Request,
        principal: Principal | None,
        *,
        policy_id: str,
        text: str,
        fmt: str,
        creating: bool,
        error: str | None = None,
        status: int = 200,
    ) -> Response:
        numbered = list(enumerate(text.splitlines(), start=1))
        line = error_line(text, error) if error else None
        if line is not None:
            line = max(1, min(line, len(numbered)))  # a parse error past the end points at the last line
        return self.render(
            request,
            principal,
            "policy_form.html",
            status=status,
            policy_id=policy_id,
            text=text,
            fmt=fmt,
            creating=creating,
            error=error,
            line=line,
            numbered=numbered,
        )

    async def new(self, request: Request, principal: Principal | None) -> Response:
        return self.editor(request, principal, policy_id="", text=EXAMPLE, fmt="yaml", creating=True)

    async def edit(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        policy_id = request.path_params["id"]
        fmt = "json" if request.query_value("format") == "json" else "yaml"
        answer = await self.api(request, principal).get(f"/AccessPolicy/{policy_id}")
        if not answer.ok:
            return self.refused(request, principal, answer, f"read AccessPolicy/{policy_id}")
        return self.editor(
            request,
            principal,
            policy_id=policy_id,
            text=policy_text(answer.data, fmt),
            fmt=fmt,
            creating=False,
        )

    async def create(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        form = await read_form(request)
        policy_id = form.text("id")
        fmt = "json" if form.first("format") == "json" else "yaml"
        text = form.first("text")
        if not ID_PATTERN.match(policy_id):
            return self.editor(
                request,
                principal,
                policy_id=policy_id,
                text=text,
                fmt=fmt,
                creating=True,
                error="Give the policy an id: 1-64 of A-Z a-z 0-9 - .",
                status=422,
            )
        existing = await self.api(request, principal).get(f"/AccessPolicy/{policy_id}")
        if existing.ok:
            return self.editor(
                request,
                principal,
                policy_id=policy_id,
                text=text,
                fmt=fmt,
                creating=True,
                error=f"AccessPolicy/{policy_id} already exists",
                status=409,
            )
        return await self.put(request, principal, policy_id, text, fmt, creating=True)

    async def save(self, request: Request, principal: Principal | None) -> Response:
        form = await read_form(request)
        fmt = "json" if form.first("format") == "json" else "yaml"
        return await self.put(
            request, principal, request.path_params["id"], form.first("text"), fmt, creating=False
        )

    async def put(
        self,
        request: Request,
        principal: Principal | None,
        policy_id: str,
        text: str,
        fmt: str,
        *,
        creating: bool,
    ) -> Response:
        assert principal is not None
        answer = await self.api(request, principal).send(
            "PUT", f"/AccessPolicy/{policy_id}", text, FORMATS[fmt]
        )
        if answer.ok:
            return redirect(f"/ui/policies/{quote(policy_id, safe='')}?saved=1")
        if answer.refused:
            return self.refused(request, principal, answer, f"write AccessPolicy/{policy_id}")
        return self.editor(
            request,
            principal,
            policy_id=policy_id,
            text=text,
            fmt=fmt,
            creating=creating,
            error=answer.message,
            status=answer.status,
        )

    async def delete(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        policy_id = request.path_params["id"]
        answer = await self.api(request, principal).delete(f"/AccessPolicy/{policy_id}")
        if not answer.ok:
            return self.refused(request, principal, answer, f"delete AccessPolicy/{policy_id}")
        return redirect(f"/ui/policies?deleted={quote(policy_id, safe='')}")

    async def try_form(self, request: Request, principal: Principal | None) -> Response:
        return self.render(
            request,
            principal,
            "policy_try.html",
            method="GET",
            path="/Patient",
            client_id="",
            results=None,
            error=None,
        )

    async def try_it(self, request: Request, principal: Principal | None) -> Response:
        """Each policy that applies to the client, tested against the request: which allows, and why."""
        assert principal is not None
        form = await read_form(request)
        method, path, client_id = form.text("method").upper() or "GET", form.text("path"), form.text("client")
        api = self.api(request, principal)
        uri, _, query_string = path.partition("?")
        given: dict[str, Any] = {"request-method": method, "uri": uri}
        if query_string:
            given["query-string"] = query_string
        if client_id:
            given["client-id"] = client_id
        policies = await api.search("AccessPolicy", [("_count", "1000"), ("_sort", "_id")])
        if not policies.ok:
            return self.refused(request, principal, policies, "list AccessPolicies (GET /AccessPolicy)")
        results: list[tuple[str, Any]] = []
        for policy in policies.entries:
            if client_id and not links_client(policy, client_id):
                continue
            document = {"request": given, "policy": {"id": policy["id"]}}
            answer = await api.call(
                "POST", "/auth/test-policy", body=orjson.dumps(document), content_type="application/json"
            )
            if answer.refused:
                doing = "test policies (POST /auth/test-policy, a root route)"
                return self.refused(request, principal, answer, doing)
            if not answer.ok:  # e.g. no such client: the API's message, beside the form
                return self.render(
                    request,
                    principal,
                    "policy_try.html",
                    status=answer.status,
                    method=method,
                    path=path,
                    client_id=client_id,
                    results=None,
                    error=answer.message,
                    allowed=None,
                )
            results.append((policy["id"], answer.data.get("result", {})))
        allowed = next((pid for pid, result in results if result.get("eval-result") is True), None)
        return self.render(
            request,
            principal,
            "policy_try.html",
            method=method,
            path=path,
            client_id=client_id,
            results=results,
            error=None,
            allowed=allowed,
        )
