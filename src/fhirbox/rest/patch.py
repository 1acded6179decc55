"""PATCH bodies: JSON Merge Patch (RFC 7396) and JSON Patch (RFC 6902, via the ``jsonpatch`` library)."""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from fhirbox.http.errors import HttpError
from fhirbox.http.formats import JSON_PATCH_TYPE, MERGE_PATCH_TYPE, media_type


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


def apply_patch(document: dict[str, Any], patch: Any, content_type: str | None) -> Any:
    """Apply ``patch`` as its Content-Type says; plain JSON or YAML picks by shape (array: JSON Patch)."""
    kind = media_type(content_type)
    use_json_patch = kind == JSON_PATCH_TYPE or (kind != MERGE_PATCH_TYPE and isinstance(patch, list))
    if not use_json_patch:
        if not isinstance(patch, dict):
            raise HttpError(400, "A merge patch must be a JSON object")
        return merge_patch(document, patch)
    if not isinstance(patch, list):
        raise HttpError(400, "A JSON Patch must be an array of operations")
    try:
        return jsonpatch.JsonPatch(patch).apply(document)
    except jsonpatch.JsonPatchConflict as exc:
        raise HttpError(409, f"JSON Patch cannot be applied: {exc}") from None
    except jsonpatch.JsonPatchTestFailed as exc:
        raise HttpError(409, f"JSON Patch test failed: {exc}") from None
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as exc:
        raise HttpError(400, f"Invalid JSON Patch: {exc}") from None
