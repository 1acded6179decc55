"""CRUD and history for any resource type, in Aidbox's REST format."""

from __future__ import annotations

import dataclasses
import uuid
from typing import TYPE_CHECKING, Any

from fhirbox.auth.principal import Principal
from fhirbox.http.errors import HttpError
from fhirbox.http.request import Request
from fhirbox.http.responses import Response, empty, render
from fhirbox.http.routing import Interaction, Route, Router
from fhirbox.models import ID_PATTERN, TYPE_PATTERN
from fhirbox.rest.patch import apply_patch
from fhirbox.rest.rules import ManagedDelete, ResourceRules
from fhirbox.rest.search import DEFAULT_COUNT, MAX_COUNT, MAX_PAGE, SearchRequest, positive_int, searchset
from fhirbox.storage.base import DELETE, UNCHANGED, Mutation, MutationResult, Store, Stored

if TYPE_CHECKING:
    from fhirbox.policy.scope_enforcement import ResourceLimit

_PATCH_RETRIES = 50
_MAX_VERSION = 2**63 - 1


class _Raced(Exception):
    """The resource changed between reading it and writing the patched version."""


def etag(stored: Stored) -> str:
    return f'W/"{stored.version}"'


def check_if_match(header: str | None, current: Stored | None) -> None:
    """412 unless ``If-Match`` names the current version (``*``: any existing version)."""
    if header is None:
        return
    live = current is not None and not current.deleted
    wanted = header.strip()
    if wanted == "*":
        if not live:
            raise HttpError(412, "If-Match: * but the resource does not exist")
        return
    versions = {tag.strip().removeprefix("W/").strip('"') for tag in wanted.split(",")}
    if not live or current is None or str(current.version) not in versions:
        raise HttpError(412, "Version Id mismatch", code="conflict")


def history_request(stored: Stored) -> dict[str, str]:
    """A history entry's ``request``: what kind of change ``stored`` was, as the request that makes it.

    The store records whether a version created, changed or deleted its resource, not the HTTP method
    that was sent: a creation (by POST, by PUT of a new id, or by the server itself) is a POST to the
    type, which keeps the resource's id; a change (PUT, PATCH, or the server's own) is a PUT of the whole
    version; a deletion is a DELETE."""
    if stored.op == "create":
        return {"method": "POST", "url": stored.type}
    if stored.op == "update":
        return {"method": "PUT", "url": f"{stored.type}/{stored.id}"}
    return {"method": "DELETE", "url": f"{stored.type}/{stored.id}"}


class ResourceApi:
    """Handlers for ``/{type}``, ``/{type}/{id}`` and their history."""

    def __init__(self, store: Store, rules: ResourceRules) -> None:
        """Links are made with each request's ``base_url``."""
        self.store = store
        self.rules = rules

    def add_routes(self, router: Router) -> None:
        router.constrain("type", TYPE_PATTERN)
        router.add("GET", "/{type}", Route(self.search, interaction="search"))
        router.add("POST", "/{type}", Route(self.create, interaction="create"))
        router.add("GET", "/{type}/{id}", Route(self.read, interaction="read"))
        router.add("PUT", "/{type}/{id}", Route(self.update, interaction="upsert"))
        router.add("PATCH", "/{type}/{id}", Route(self.patch, interaction="update"))
        router.add("DELETE", "/{type}/{id}", Route(self.delete, interaction="delete"))
        router.add("GET", "/{type}/{id}/_history", Route(self.history, interaction="read"))
        router.add("GET", "/{type}/{id}/_history/{vid}", Route(self.vread, interaction="read"))

    # -- helpers ---------------------------------------------------------------------------------
    def resource_type(self, request: Request) -> str:
        type_ = request.path_params["type"]
        if not TYPE_PATTERN.match(type_) or type_ in self.rules.internal_types:
            raise HttpError(404, f"Unknown resource type {type_!r}")
        return type_

    def writable_type(self, request: Request) -> str:
        """The route's type, unless only the server writes it (405)."""
        type_ = self.resource_type(request)
        if self.rules.is_server_managed(type_):
            raise HttpError(
                405,
                f"{type_} resources are managed by the server and cannot be written through the API",
                headers={"Allow": "GET, DELETE" if self.rules.managed_delete(type_) else "GET"},
            )
        return type_

    def target(self, request: Request, *, writing: bool = False) -> tuple[str, str]:
        type_ = self.writable_type(request) if writing else self.resource_type(request)
        id_ = request.path_params["id"]
        if not ID_PATTERN.match(id_):
            if writing:
                raise HttpError(422, f"Invalid id {id_!r}: use 1-64 of A-Z a-z 0-9 - .")
            raise HttpError(404, f"Resource {type_}/{id_} not found")
        return type_, id_

    def respond(
        self, request: Request, status: int, stored: Stored, extra: dict[str, str] | None = None
    ) -> Response:
        headers = {"ETag": etag(stored), "Last-Modified": stored.body["meta"]["lastUpdated"]}
        if extra:
            headers.update(extra)
        return render(request, status, self.rules.present(stored.type, stored.body), headers)

    async def incoming(self, request: Request, type_: str) -> dict[str, Any]:
        """The request body as a resource of ``type_``, checked and prepared for storage."""
        body = await request.document()
        if not isinstance(body, dict):
            raise HttpError(422, "The resource must be a JSON object")
        declared = body.get("resourceType", type_)
        if declared != type_:
            raise HttpError(422, f"resourceType {declared!r} does not match the URL's type {type_!r}")
        body["resourceType"] = type_
        for hidden in self.rules.hidden_fields(type_):
            if hidden in body and not isinstance(body[hidden], str):
                raise HttpError(422, f"{hidden} must be a string")
        await self.rules.prepare(type_, body)
        return body

    def within_limit(
        self, limit: ResourceLimit | None, interaction: Interaction, type_: str, body: dict[str, Any]
    ) -> None:
        """403 unless the request's SMART scopes (if it has any) cover ``interaction`` on ``body``,
        seen as clients see it."""
        if limit is not None:
            limit.check(interaction, self.rules.present(type_, body))

    def writer(
        self, type_: str, body: dict[str, Any], if_match: str | None, limit: ResourceLimit | None
    ) -> Mutation:
        def mutation(current: Stored | None) -> dict[str, Any]:
            check_if_match(if_match, current)
            if current is not None and not current.deleted:
                self.within_limit(limit, "update", type_, current.body)
                self.within_limit(limit, "update", type_, body)
            else:
                self.within_limit(limit, "create", type_, body)
            new = dict(body)
            self.rules.carry_hidden(type_, new, current)
            return new

        return mutation

    async def write(
        self, request: Request, principal: Principal | None, type_: str, id_: str, mutation: Mutation
    ) -> MutationResult:
        """``store.mutate`` (with the type's write record, e.g. its audit event, in the same
        transaction), then the type's after-write rules once the write is committed."""
        client_id = principal.client_id if principal is not None else None
        attach = self.rules.write_record(type_, client_id, request.client_addr)
        result = await self.store.mutate(type_, id_, mutation, attach=attach)
        await self.rules.written(type_, result.before, result.after)
        return result

    # -- handlers --------------------------------------------------------------------------------
    async def read(self, request: Request, principal: Principal | None) -> Response:
        type_, id_ = self.target(request)
        stored = await self.store.read(type_, id_)
        if stored is None:
            raise HttpError(404, f"Resource {type_}/{id_} not found")
        if stored.deleted:
            raise HttpError(410, f"Resource {type_}/{id_} was deleted")
        self.within_limit(request.resource_limit, "read", type_, stored.body)
        return self.respond(request, 200, stored)

    async def vread(self, request: Request, principal: Principal | None) -> Response:
        type_, id_ = self.target(request)
        vid = request.path_params["vid"]
        # At most 19 digits before int(): a longer string may pass int()'s digit limit (ValueError).
        known = vid.isascii() and vid.isdigit() and len(vid) <= 19 and int(vid) <= _MAX_VERSION
        stored = await self.store.read_version(type_, id_, int(vid)) if known else None
        if stored is None:
            raise HttpError(404, f"Version {vid} of {type_}/{id_} not found")
        if stored.deleted:
            raise HttpError(410, f"Version {vid} of {type_}/{id_} is a deletion")
        self.within_limit(request.resource_limit, "read", type_, stored.body)
        return self.respond(request, 200, stored)

    async def update(self, request: Request, principal: Principal | None) -> Response:
        type_, id_ = self.target(request, writing=True)
        body = await self.incoming(request, type_)
        body["id"] = id_
        self.rules.check_guards(type_, id_, body)
        mutation = self.writer(type_, body, request.headers.get("if-match"), request.resource_limit)
        result = await self.write(request, principal, type_, id_, mutation)
        assert result.after is not None
        return self.respond(request, 201 if result.created else 200, result.after)

    async def create(self, request: Request, principal: Principal | None) -> Response:
        type_ = self.writable_type(request)
        body = await self.incoming(request, type_)
        id_ = body.get("id")
        if id_ is None:
            id_ = str(uuid.uuid4())
        elif not isinstance(id_, str) or not ID_PATTERN.match(id_):
            raise HttpError(422, f"Invalid id {id_!r}: use 1-64 of A-Z a-z 0-9 - .")
        body["id"] = id_
        self.rules.check_guards(type_, id_, body)
        self.within_limit(request.resource_limit, "create", type_, body)

        def mutation(current: Stored | None) -> dict[str, Any]:
            if current is not None and not current.deleted:
                raise HttpError(409, f"Resource {type_}/{id_} already exists")
            return dict(body)

        result = await self.write(request, principal, type_, id_, mutation)
        assert result.after is not None
        location = f"{request.base_url}/{type_}/{id_}/_history/{result.after.version}"
        return self.respond(request, 201, result.after, {"Location": location})

    def patched(
        self,
        type_: str,
        id_: str,
        current: Stored | None,
        patch: Any,
        request: Request,
        limit: ResourceLimit | None,
    ) -> dict[str, Any]:
        """``current`` with ``patch`` applied, checked like a PUT body (before write hooks)."""
        if current is None or current.deleted:
            status = 404 if current is None else 410
            raise HttpError(status, f"Resource {type_}/{id_} not found")
        self.within_limit(limit, "update", type_, current.body)
        result = apply_patch(
            self.rules.present(type_, current.body),
            patch,
            request.headers.get("content-type"),
            max_bytes=request.max_body_bytes,
            max_depth=request.max_depth,
        )
        if not isinstance(result, dict):
            raise HttpError(422, "The patched resource must be a JSON object")
        if result.get("resourceType", type_) != type_ or result.get("id", id_) != id_:
            raise HttpError(422, "A patch may not change resourceType or id")
        result.pop("meta", None)
        result.update(resourceType=type_, id=id_)
        self.rules.check_guards(type_, id_, result)
        self.within_limit(limit, "update", type_, result)
        return result

    async def patch(self, request: Request, principal: Principal | None) -> Response:
        type_, id_ = self.target(request, writing=True)
        patch = await request.document()
        if_match = request.headers.get("if-match")
        limit = request.resource_limit
        if not self.rules.has_write_hooks(type_):
            # Nothing to prepare asynchronously: patch inside the write itself, so concurrent patches
            # of one resource are serialised by the store and none is lost or retried.
            def in_place(current: Stored | None) -> dict[str, Any]:
                check_if_match(if_match, current)
                return self.patched(type_, id_, current, patch, request, limit)

            result = await self.write(request, principal, type_, id_, in_place)
            assert result.after is not None
            return self.respond(request, 200, result.after)
        # Write hooks are async (e.g. hashing a secret), so they cannot run inside the write: patch
        # optimistically and retry when another write got in between.
        for _ in range(_PATCH_RETRIES):
            current = await self.store.read(type_, id_)
            check_if_match(if_match, current)
            patched = self.patched(type_, id_, current, patch, request, limit)
            await self.rules.prepare(type_, patched)
            assert current is not None
            seen = current.version

            def mutation(latest: Stored | None, patched: dict[str, Any] = patched, seen: int = seen) -> Any:
                if latest is None or latest.version != seen:
                    raise _Raced
                new = dict(patched)
                self.rules.carry_hidden(type_, new, latest)
                return new

            try:
                result = await self.write(request, principal, type_, id_, mutation)
            except _Raced:
                continue
            assert result.after is not None
            return self.respond(request, 200, result.after)
        raise HttpError(409, f"Resource {type_}/{id_} is changing too often to patch; retry")

    async def delete(self, request: Request, principal: Principal | None) -> Response:
        type_ = self.resource_type(request)
        managed_delete = self.rules.managed_delete(type_)
        if managed_delete is not None:
            return await self.delete_managed(request, principal, managed_delete)
        type_, id_ = self.target(request, writing=True)
        if_match = request.headers.get("if-match")
        self.rules.check_guards(type_, id_, None)
        limit = request.resource_limit

        def mutation(current: Stored | None) -> Any:
            if current is None or current.deleted:
                return UNCHANGED
            check_if_match(if_match, current)
            self.within_limit(limit, "delete", type_, current.body)
            return DELETE

        result = await self.write(request, principal, type_, id_, mutation)
        if result.after is None or result.after is result.before:
            return empty(204)
        return self.respond(request, 200, result.after)

    async def delete_managed(
        self, request: Request, principal: Principal | None, managed_delete: ManagedDelete
    ) -> Response:
        """DELETE of a server-managed type: the server ends it its own way (a Session is closed)."""
        type_, id_ = self.target(request)
        if request.resource_limit is not None:
            # The server's own types change only through the server, and not in what a scope
            # restricts (a Session's client), so checking before the close is exact.
            current = await self.store.read(type_, id_)
            if current is not None and not current.deleted:
                self.within_limit(request.resource_limit, "delete", type_, current.body)
        client_id = principal.client_id if principal is not None else None
        stored = await managed_delete(id_, client_id, request.client_addr)
        if stored is None or stored.deleted:
            raise HttpError(404, f"Resource {type_}/{id_} not found")
        return self.respond(request, 200, stored)

    async def search(self, request: Request, principal: Principal | None) -> Response:
        type_ = self.resource_type(request)
        hidden = self.rules.hidden_fields(type_)
        search = SearchRequest(request.query, hidden)
        query = search.query
        if request.resource_limit is not None:
            limit = request.resource_limit.search_filters(query.filters, hidden)
            query = dataclasses.replace(query, filters=[*query.filters, *limit])
        found = await self.store.search(type_, query)
        resources = [search.project(self.rules.present(type_, body)) for body in found.resources]
        return render(request, 200, searchset(search, resources, found.total, f"{request.base_url}/{type_}"))

    async def history(self, request: Request, principal: Principal | None) -> Response:
        type_, id_ = self.target(request)
        count, page = DEFAULT_COUNT, 1
        for name, value in request.query:
            if name == "_count":
                count = positive_int("_count", value, MAX_COUNT)
            elif name == "_page":
                page = positive_int("_page", value, MAX_PAGE)
            elif name != "_format":
                raise HttpError(400, f"Unsupported history parameter {name}={value!r}")
        versions, total = await self.store.history(type_, id_, count, (page - 1) * count)
        if total == 0:
            raise HttpError(404, f"Resource {type_}/{id_} not found")
        for stored in versions:
            self.within_limit(request.resource_limit, "read", type_, stored.body)
        bundle = {
            "resourceType": "Bundle",
            "type": "history",
            "total": total,
            "entry": [
                {
                    "resource": self.rules.present(type_, stored.body),
                    "fullUrl": f"{request.base_url}/{type_}/{id_}",
                    "request": history_request(stored),
                    "response": {
                        "status": "201 Created" if stored.op == "create" else "200 OK",
                        "etag": etag(stored),
                        "lastModified": stored.body["meta"]["lastUpdated"],
                    },
                }
                for stored in versions
            ],
        }
        return render(request, 200, bundle)
