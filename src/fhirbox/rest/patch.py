"""PATCH bodies: JSON Merge Patch (RFC 7396) and JSON Patch (RFC 6902, via the ``jsonpatch`` library)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from fhirbox.http.errors import HttpError
from fhirbox.http.formats import JSON_PATCH_TYPE, MERGE_PATCH_TYPE, check_document, media_type


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge recursively, ``null`` removes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def apply_patch(
    document: dict[str, Any], patch: Any, content_type: str | None, *, max_bytes: int, max_depth: int
) -> Any:
    """Apply ``patch`` as its Content-Type says; plain JSON or YAML picks by shape (array: JSON Patch).

    The result is bounded like a request body: a JSON Patch ``copy`` duplicates what it points at, so
    a few hundred bytes of ``copy`` operations could double a resource again and again; the weight
    each operation adds (its value, or what it copies) is counted as it is applied, and past
    ``max_bytes`` the patch is refused (413) before anything larger is built. The result nesting
    deeper than ``max_depth`` is refused too (400), as a body would be."""
    kind = media_type(content_type)
    use_json_patch = kind == JSON_PATCH_TYPE or (kind != MERGE_PATCH_TYPE and isinstance(patch, list))
    if not use_json_patch:
        if not isinstance(patch, dict):
            raise HttpError(400, "A merge patch must be a JSON object")
        result = merge_patch(document, patch)
    elif not isinstance(patch, list):
        raise HttpError(400, "A JSON Patch must be an array of operations")
    else:
        result = _json_patch(document, patch, max_bytes)
    check_document(result, max_depth, max(max_bytes, 1024))
    return result


def _json_patch(document: dict[str, Any], patch: list[Any], max_bytes: int) -> Any:
    budget = _Budget(max_bytes)
    budget.add(document)
    result: Any = copy.deepcopy(document)
    try:
        for operation in patch:
            if isinstance(operation, dict):
                if operation.get("op") == "copy" and isinstance(operation.get("from"), str):
                    try:
                        budget.add(jsonpatch.JsonPointer(operation["from"]).resolve(result))
                    except jsonpatch.JsonPointerException:
                        pass  # the operation itself reports it
                elif operation.get("op") in ("add", "replace"):
                    budget.add(operation.get("value"))
            result = jsonpatch.JsonPatch([operation]).apply(result, in_place=True)
    except jsonpatch.JsonPatchConflict as exc:
        raise HttpError(409, f"JSON Patch cannot be applied: {exc}") from None
    except jsonpatch.JsonPatchTestFailed as exc:
        raise HttpError(409, f"JSON Patch test failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise HttpError(400, f"Invalid JSON Patch: {exc}") from None
    return result


class _Budget:
    """The weight a patch has added so far (values and keys: one per node plus the length of each
    string), refused once past its limit, counting no further than that."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def add(self, value: Any) -> None:
        stack = [value]
        while stack:
            item = stack.pop()
            self.used += 1
            if isinstance(item, dict):
                for key, member in item.items():
                    self.used += len(key) if isinstance(key, str) else 1
                    stack.append(member)
            elif isinstance(item, list):
                stack.extend(item)
            elif isinstance(item, str):
                self.used += len(item)
            if self.used > self.limit:
                raise HttpError(413, f"The patched resource would be larger than {self.limit} bytes")
