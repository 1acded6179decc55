"""Clients: list and search, create (a strong secret generated when none is given, shown once), edit
with the API's 422 messages, rotate the secret, deactivate, delete; per client its Sessions, the
policies that apply to it and its recent audit events."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import orjson

from fhirbox.auth.principal import Principal
from fhirbox.console.api import Answer, Api
from fhirbox.console.forms import Form, read_form
from fhirbox.console.html import redirect
from fhirbox.console.pages import PAGE_SIZE, Pages, page_number
from fhirbox.http.request import Request
from fhirbox.http.responses import Response
from fhirbox.http.routing import Route, Router
from fhirbox.models.session import iso
from fhirbox.policy.compile import parse_links
from fhirbox.policy.rule import PolicyError

# The grant types the form offers (the token endpoint serves these; ``basic`` is API calls with Basic).
GRANT_TYPES = ("client_credentials", "basic", "refresh_token")
JWT_BEARER = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
_LIFETIMES = ("access_token_expiration", "refresh_token_expiration")
# A client's page shows its audit events of this many last seconds (a bounded, indexed range).
RECENT = 86400


def new_secret() -> str:
    """256 bits from the OS CSPRNG."""
    return secrets.token_urlsafe(32)


@dataclass
class ClientForm:
    """The form's fields as text, read from a Client body or from a posted form."""

    id: str = ""
    grant_types: list[str] = field(default_factory=lambda: ["client_credentials"])
    token_format: str = "opaque"  # noqa: S105 - a format name, not a secret
    access_token_expiration: str = ""
    refresh_token: bool = False
    refresh_token_expiration: str = ""
    audience: str = ""
    scope: str = ""
    private_key_jwt: bool = False
    jwks: str = ""
    jwks_uri: str = ""
    active: bool = True

    @classmethod
    def of(cls, body: dict[str, Any]) -> ClientForm:
        auth = body.get("auth")
        cc = auth.get("client_credentials") if isinstance(auth, dict) else None
        cc = cc if isinstance(cc, dict) else {}
        jwks = body.get("jwks")
        return cls(
            id=str(body.get("id", "")),
            grant_types=[g for g in body.get("grant_types") or [] if isinstance(g, str)],
            token_format="jwt" if cc.get("token_format") == "jwt" else "opaque",
            access_token_expiration=_text(cc.get("access_token_expiration") or cc.get("token_expiration")),
            refresh_token=cc.get("refresh_token") is True,
            refresh_token_expiration=_text(cc.get("refresh_token_expiration")),
            audience="\n".join(a for a in cc.get("audience") or [] if isinstance(a, str)),
            scope=" ".join(s for s in body.get("scope") or [] if isinstance(s, str)),
            private_key_jwt=JWT_BEARER in (cc.get("client_assertion_types") or []),
            jwks=orjson.dumps(jwks, option=orjson.OPT_INDENT_2).decode() if jwks is not None else "",
            jwks_uri=str(body.get("jwks_uri") or ""),
            active=body.get("active") is not False,
        )

    @classmethod
    def read(cls, form: Form) -> ClientForm:
        return cls(
            id=form.text("id"),
            grant_types=form.all("grant_types"),
            token_format=form.text("token_format"),
            access_token_expiration=form.text("access_token_expiration"),
            refresh_token=form.checked("refresh_token"),
            refresh_token_expiration=form.text("refresh_token_expiration"),
            audience=form.first("audience"),
            scope=form.first("scope"),
            private_key_jwt=form.checked("private_key_jwt"),
            jwks=form.first("jwks").strip(),
            jwks_uri=form.text("jwks_uri"),
        )

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """``body`` with the form's settings; what the form does not show is kept as it was.
        A value the form cannot turn into JSON raises ``ValueError`` with a message for the person."""
        body = {key: value for key, value in body.items() if key != "meta"}
        body["resourceType"] = "Client"
        body["grant_types"] = self.grant_types
        stored_auth = body.get("auth")
        auth: dict[str, Any] = stored_auth if isinstance(stored_auth, dict) else {}
        stored_cc = auth.get("client_credentials")
        cc: dict[str, Any] = dict(stored_cc) if isinstance(stored_cc, dict) else {}
        cc.pop("token_expiration", None)
        if self.token_format == "jwt":  # noqa: S105 - a format name
            cc["token_format"] = "jwt"  # noqa: S105
        else:
            cc.pop("token_format", None)
        for name in _LIFETIMES:
            text = getattr(self, name)
            if text:
                # Up to 18 digits: a 64-bit integer (larger ones stay text, which the API refuses).
                small = text.isascii() and text.isdigit() and len(text) <= 18
                cc[name] = int(text) if small else text  # the API says why not
            else:
                cc.pop(name, None)
        if self.refresh_token:
            cc["refresh_token"] = True
        else:
            cc.pop("refresh_token", None)
        audience = [line.strip() for line in self.audience.splitlines() if line.strip()]
        _set(cc, "audience", audience or None)
        types = [t for t in cc.get("client_assertion_types") or [] if t != JWT_BEARER]
        _set(cc, "client_assertion_types", ([*types, JWT_BEARER] if self.private_key_jwt else types) or None)
        _set(body, "auth", {**auth, "client_credentials": cc} if cc else None)
        _set(body, "scope", self.scope.split() or None)
        if self.jwks:
            try:
                body["jwks"] = orjson.loads(self.jwks)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"jwks is not valid JSON: {exc}") from None
        else:
            body.pop("jwks", None)
        _set(body, "jwks_uri", self.jwks_uri or None)
        return body


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _set(target: dict[str, Any], key: str, value: Any) -> None:
    if value is None:
        target.pop(key, None)
    else:
        target[key] = value


def links_client(policy: dict[str, Any], client_id: str) -> bool:
    """Whether ``policy`` applies to ``client_id``: global, or linked to it."""
    try:
        links = parse_links(policy.get("link"))
    except PolicyError:
        return False
    return links.is_global or client_id in links.clients


class ClientPages(Pages):
    def add_routes(self, router: Router) -> None:
        router.add("GET", "/ui/clients", Route(self.list, "console"))
        router.add("POST", "/ui/clients", Route(self.create, "console"))
        router.add("GET", "/ui/clients/new", Route(self.new, "console"))
        router.add("GET", "/ui/clients/{id}", Route(self.show, "console"))
        router.add("POST", "/ui/clients/{id}", Route(self.update, "console"))
        router.add("POST", "/ui/clients/{id}/secret", Route(self.rotate_secret, "console"))
        router.add("POST", "/ui/clients/{id}/active", Route(self.set_active, "console"))
        router.add("GET", "/ui/clients/{id}/delete", Route(self.confirm_delete, "console"))
        router.add("POST", "/ui/clients/{id}/delete", Route(self.delete, "console"))

    async def list(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        q, grant = (request.query_value("q") or "").strip(), request.query_value("grant") or ""
        page = page_number(request)
        query = [("_sort", "_id"), ("_count", str(PAGE_SIZE)), ("_page", str(page))]
        query += [("_elements", "grant_types,active,auth,scope")]
        if q:
            query.append(("_id", q))
        if grant:
            query.append(("grant_types", grant))
        answer = await self.api(request, principal).search("Client", query)
        if not answer.ok:
            return self.refused(request, principal, answer, "list Clients (GET /Client)")
        return self.render(
            request,
            principal,
            "clients.html",
            clients=answer.entries,
            total=answer.total,
            page=page,
            page_size=PAGE_SIZE,
            q=q,
            grant=grant,
            grant_types=GRANT_TYPES,
            deleted=request.query_value("deleted"),
        )

    async def new(self, request: Request, principal: Principal | None) -> Response:
        return self.form_page(request, principal, ClientForm(), error=None, creating=True)

    def form_page(
        self,
        request: Request,
        principal: Principal | None,
        form: ClientForm,
        *,
        error: str | None,
        creating: bool,
        status: int = 200,
        **extra: Any,
    ) -> Response:
        return self.render(
            request,
            principal,
            "client_form.html",
            status=status,
            form=form,
            error=error,
            creating=creating,
            grant_types=GRANT_TYPES,
            **extra,
        )

    async def create(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        posted = await read_form(request)
        form = ClientForm.read(posted)
        secret = posted.first("secret") or new_secret()
        try:
            body = form.apply({"id": form.id} if form.id else {})
        except ValueError as exc:
            return self.form_page(request, principal, form, error=str(exc), creating=True, status=422)
        body["secret"] = secret
        answer = await self.api(request, principal).call(
            "POST", "/Client", body=orjson.dumps(body), content_type="application/json"
        )
        if not answer.ok:
            if answer.refused:
                return self.refused(request, principal, answer, "create a Client (POST /Client)")
            return self.form_page(
                request, principal, form, error=answer.message, creating=True, status=answer.status
            )
        return self.render(
            request,
            principal,
            "secret.html",
            client_id=answer.data["id"],
            secret=secret,
            generated=not posted.first("secret"),
            created=True,
        )

    async def show(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = request.path_params["id"]
        api = self.api(request, principal)
        answer = await api.get(f"/Client/{client_id}")
        if not answer.ok:
            return self.refused(request, principal, answer, f"read Client/{client_id}")
        return await self.client_page(request, principal, api, answer, ClientForm.of(answer.data), None)

    async def client_page(
        self,
        request: Request,
        principal: Principal,
        api: Api,
        client: Answer,
        form: ClientForm,
        error: str | None,
        status: int = 200,
    ) -> Response:
        client_id = str(client.data["id"])
        sessions = await api.search(
            "Session", [("client.id", client_id), ("_sort", "-_lastUpdated"), ("_count", "20")]
        )
        policies = await api.search("AccessPolicy", [("_count", "1000"), ("_sort", "_id")])
        applying = [p for p in policies.entries if links_client(p, client_id)]
        since = iso(self.sessions.clock() - RECENT)
        events = await api.search(
            "AuditEvent",
            [
                ("agent.who.reference", f"Client/{client_id}"),
                ("_lastUpdated", f"ge{since}"),
                ("_sort", "-_lastUpdated"),
                ("_count", "20"),
                ("_total", "none"),
            ],
        )
        return self.render(
            request,
            principal,
            "client.html",
            status=status,
            client=client.data,
            etag=client.headers.get("etag", ""),
            form=form,
            error=error,
            grant_types=GRANT_TYPES,
            sessions=sessions,
            policies=policies,
            applying=applying,
            events=events,
        )

    async def update(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = request.path_params["id"]
        api = self.api(request, principal)
        posted = await read_form(request)
        form = ClientForm.read(posted)
        current = await api.get(f"/Client/{client_id}")
        if not current.ok:
            return self.refused(request, principal, current, f"read Client/{client_id}")
        form.id, form.active = client_id, current.data.get("active") is not False
        try:
            body = form.apply(current.data)
        except ValueError as exc:
            return await self.client_page(request, principal, api, current, form, str(exc), 422)
        answer = await api.put(f"/Client/{client_id}", body, posted.first("etag") or None)
        if answer.refused:
            return self.refused(request, principal, answer, f"change Client/{client_id}")
        if not answer.ok:
            return await self.client_page(
                request, principal, api, current, form, answer.message, answer.status
            )
        return redirect(f"/ui/clients/{quote(client_id, safe='')}?saved=1")

    async def rotate_secret(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = request.path_params["id"]
        api = self.api(request, principal)
        current = await api.get(f"/Client/{client_id}")
        if not current.ok:
            return self.refused(request, principal, current, f"read Client/{client_id}")
        secret = new_secret()
        body = {key: value for key, value in current.data.items() if key != "meta"}
        body["secret"] = secret
        answer = await api.put(f"/Client/{client_id}", body, current.headers.get("etag"))
        if not answer.ok:
            return self.refused(request, principal, answer, f"change the secret of Client/{client_id}")
        return self.render(
            request,
            principal,
            "secret.html",
            client_id=client_id,
            secret=secret,
            generated=True,
            created=False,
        )

    async def set_active(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = request.path_params["id"]
        active = (await read_form(request)).first("active") == "true"
        api = self.api(request, principal)
        current = await api.get(f"/Client/{client_id}")
        if not current.ok:
            return self.refused(request, principal, current, f"read Client/{client_id}")
        body = {key: value for key, value in current.data.items() if key != "meta"}
        body["active"] = active
        answer = await api.put(f"/Client/{client_id}", body, current.headers.get("etag"))
        if not answer.ok:
            what = "activate" if active else "deactivate"
            return self.refused(request, principal, answer, f"{what} Client/{client_id}")
        return redirect(f"/ui/clients/{quote(client_id, safe='')}")

    async def confirm_delete(self, request: Request, principal: Principal | None) -> Response:
        return self.render(request, principal, "confirm_delete.html", client_id=request.path_params["id"])

    async def delete(self, request: Request, principal: Principal | None) -> Response:
        assert principal is not None
        client_id = request.path_params["id"]
        answer = await self.api(request, principal).delete(f"/Client/{client_id}")
        if not answer.ok:
            return self.refused(request, principal, answer, f"delete Client/{client_id}")
        return redirect(f"/ui/clients?deleted={quote(client_id, safe='')}")
