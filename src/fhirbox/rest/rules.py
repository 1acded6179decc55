"""Per-type rules of the generic REST API: checks and preparation before a write, fields that are never
shown, types only the server writes, and types that are internal to the server."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fhirbox.storage.base import Attach, Stored

WriteHook = Callable[[dict[str, Any]], Awaitable[None]]
# Refuses (raises an HttpError) a write of ``id``: the new body, or None for a deletion.
WriteGuard = Callable[[str, "dict[str, Any] | None"], None]
# Runs after a write is committed, with the versions before and after it.
AfterWrite = Callable[["Stored | None", Stored], Awaitable[None]]
# Ends the resource with this id the server's way, asked by (client id, address); returns it as
# stored afterwards, None if absent.
ManagedDelete = Callable[[str, "str | None", str], Awaitable[Stored | None]]
# From the client id and address of an API call, what to commit with its write (its audit record).
WriteRecord = Callable[["str | None", str], "Attach | None"]


class ResourceRules:
    def __init__(self) -> None:
        self._hooks: dict[str, list[WriteHook]] = {}
        self._hidden: dict[str, tuple[str, ...]] = {}
        self.internal_types: set[str] = set()
        self._managed: dict[str, ManagedDelete | None] = {}
        self._guards: dict[str, list[WriteGuard]] = {}
        self._after: dict[str, list[AfterWrite]] = {}
        self._records: dict[str, WriteRecord] = {}

    def on_write(self, type_: str, hook: WriteHook) -> None:
        """Run ``hook(body)`` before every write of ``type_``; it may change the body or raise a 422."""
        self._hooks.setdefault(type_, []).append(hook)

    def hide_fields(self, type_: str, *names: str) -> None:
        """Never return these fields; a write that omits them keeps the stored values."""
        self._hidden[type_] = (*self._hidden.get(type_, ()), *names)

    def hide_type(self, type_: str) -> None:
        """Keep ``type_`` out of the REST API entirely (server-internal data)."""
        self.internal_types.add(type_)

    def guard(self, type_: str, guard: WriteGuard) -> None:
        """Run ``guard(id, body)`` before every write and deletion of ``type_`` (e.g. a 409)."""
        self._guards.setdefault(type_, []).append(guard)

    def after_write(self, type_: str, hook: AfterWrite) -> None:
        """Run ``hook(before, after)`` once a write or deletion of ``type_`` through the API is committed."""
        self._after.setdefault(type_, []).append(hook)

    def record_writes(self, type_: str, record: WriteRecord) -> None:
        """Commit what ``record(client id, address)`` attaches with every API write of ``type_``."""
        self._records[type_] = record

    def write_record(self, type_: str, client_id: str | None, address: str) -> Attach | None:
        record = self._records.get(type_)
        return record(client_id, address) if record is not None else None

    def check_guards(self, type_: str, id_: str, body: dict[str, Any] | None) -> None:
        for guard in self._guards.get(type_, ()):
            guard(id_, body)

    async def written(self, type_: str, before: Stored | None, after: Stored | None) -> None:
        if after is None or after is before:
            return
        for hook in self._after.get(type_, ()):
            await hook(before, after)

    def server_managed(self, type_: str, on_delete: ManagedDelete | None = None) -> None:
        """Only the server writes ``type_``: PUT, POST and PATCH answer 405, whoever asks; DELETE runs
        ``on_delete`` (e.g. closing a Session) or answers 405 without one. Reads stay as they are."""
        self._managed[type_] = on_delete

    def is_server_managed(self, type_: str) -> bool:
        return type_ in self._managed

    def managed_delete(self, type_: str) -> ManagedDelete | None:
        return self._managed.get(type_)

    def has_write_hooks(self, type_: str) -> bool:
        return bool(self._hooks.get(type_))

    def hidden_fields(self, type_: str) -> tuple[str, ...]:
        return self._hidden.get(type_, ())

    async def prepare(self, type_: str, body: dict[str, Any]) -> None:
        for hook in self._hooks.get(type_, ()):
            await hook(body)

    def carry_hidden(self, type_: str, body: dict[str, Any], before: Stored | None) -> None:
        hidden = self._hidden.get(type_)
        if not hidden or before is None or before.deleted:
            return
        for name in hidden:
            if name not in body and name in before.body:
                body[name] = before.body[name]

    def present(self, type_: str, body: dict[str, Any]) -> dict[str, Any]:
        """The resource as clients may see it."""
        hidden = self._hidden.get(type_)
        if not hidden or not any(name in body for name in hidden):
            return body
        return {key: value for key, value in body.items() if key not in hidden}
