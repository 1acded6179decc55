"""JSON and YAML encoding and decoding, with the safety bounds a public endpoint needs."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from itertools import chain
from typing import Any
from urllib.parse import parse_qsl

import orjson
import yaml

from fhirbox.http.errors import HttpError

JSON_TYPES = frozenset({"application/json", "application/fhir+json"})
YAML_TYPES = frozenset({"text/yaml", "application/yaml", "application/x-yaml", "text/x-yaml"})
FORM_TYPE = "application/x-www-form-urlencoded"
MERGE_PATCH_TYPE = "application/merge-patch+json"
JSON_PATCH_TYPE = "application/json-patch+json"

_YAML_BASE: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_TAG = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT, _SEQ, _MAP = (
    _TAG + name for name in ("str", "null", "bool", "int", "float", "seq", "map")
)

# The YAML 1.2 core schema (spec 10.3.2): the only plain scalars that are not strings. NO, on, yes,
# 12:30, 0777-as-octal and dates are YAML 1.1 types and stay strings here.
_CORE_NULL = re.compile(r"(?:null|Null|NULL|~|)\Z")
_CORE_BOOL = re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z")
_CORE_DECIMAL = re.compile(r"([-+]?)([0-9]+)\Z")
_CORE_OCTAL_HEX = re.compile(r"0(?:o[0-7]+|x[0-9a-fA-F]+)\Z")
_CORE_FLOAT = re.compile(r"([-+]?)(?:\.([0-9]+)|([0-9]+)(?:\.([0-9]*))?)([eE][-+]?[0-9]+)?\Z")
_CORE_SPECIAL_FLOAT = re.compile(r"(?:[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z")


class _Loader(_YAML_BASE):  # type: ignore[misc]
    """Safe YAML loader that only parses and composes; ``_construct`` builds the values."""

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str:
        """The core schema's tag for a plain scalar; a string otherwise (there are no path resolvers)."""
        if kind is yaml.ScalarNode:
            if implicit[0]:
                for tag, pattern in self.yaml_implicit_resolvers.get(value[:1], ()):
                    if pattern.match(value):
                        return str(tag)
            return _STR
        return _SEQ if kind is yaml.SequenceNode else _MAP


_Loader.yaml_implicit_resolvers = {}
for _tag, _pattern, _first in (
    (_NULL, _CORE_NULL, ["n", "N", "~", ""]),
    (_BOOL, _CORE_BOOL, list("tTfF")),
    (_INT, _CORE_DECIMAL, list("-+0123456789")),
    (_INT, _CORE_OCTAL_HEX, ["0"]),
    (_FLOAT, _CORE_FLOAT, list("-+.0123456789")),
    (_FLOAT, _CORE_SPECIAL_FLOAT, list("-+.")),
):
    _Loader.add_implicit_resolver(_tag, _pattern, _first)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    """Quotes every string that a YAML 1.1 or a YAML 1.2 reader would take for something else."""


for _first, _resolvers in _Loader.yaml_implicit_resolvers.items():
    for _tag, _pattern in _resolvers:
        _Dumper.add_implicit_resolver(_tag, _pattern, [_first])


def parse_pairs(text: str, *, strict: bool) -> list[tuple[str, str]]:
    """``name=value&...`` pairs in order, blank values kept: ``parse_qsl`` (``errors="strict"``: a
    percent-encoding that is not UTF-8 raises ``UnicodeDecodeError``; ``strict``: a pair without
    ``=`` raises ``ValueError``), decoded without it when nothing in ``text`` needs decoding."""
    if not text:
        return []
    if "%" in text or "+" in text:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=strict, errors="strict")
    pairs: list[tuple[str, str]] = []
    for part in text.split("&"):
        name, equals, value = part.partition("=")
        if not equals:
            if strict:
                raise ValueError(f"bad query field: {part!r}")
            if not part:
                continue
        pairs.append((name, value))
    return pairs


def media_type(content_type: str | None) -> str:
    """The bare, lower-case media type of a Content-Type header value."""
    if not content_type:
        return ""
    return content_type.split(";", 1)[0].strip().lower()


# PostgreSQL text cannot hold U+0000; refusing it everywhere keeps both backends alike.
_NUL = "Strings may not contain the NUL character (U+0000)"


def check_document(document: Any, max_depth: int, max_nodes: int) -> None:
    """Reject documents that are not plain JSON values, nest too deep or hold more than ``max_nodes``.

    Runs on every decoded body; YAML bodies were already bounded after alias expansion (``load_yaml``).
    """
    nodes = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > max_nodes:
            raise HttpError(413, "Document expands beyond the allowed size")
        if depth > max_depth:
            raise HttpError(400, f"Document is nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise HttpError(400, f"Object keys must be strings, got {key!r}")
                if "\x00" in key:
                    raise HttpError(400, _NUL)
                stack.append((item, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)
        elif isinstance(value, str):
            if "\x00" in value:
                raise HttpError(400, _NUL)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise HttpError(400, "Numbers must be finite")
        elif value is not None and not isinstance(value, str | int | bool):
            raise HttpError(400, f"Unsupported value of type {type(value).__name__} in document")


def _yaml_error(text: str, reason: str) -> HttpError:
    return HttpError(400, f"Malformed YAML: {reason}: {text[:40]!r}")


def _json_number(spelled: str, text: str) -> Any:
    """The number ``text``, spelled in JSON's grammar, as a JSON body would read it (orjson: 64-bit
    integers exact, larger ones as a double, past a double refused)."""
    try:
        return orjson.loads(spelled)
    except orjson.JSONDecodeError as exc:
        raise _yaml_error(text, exc.msg) from None


def _core_number(text: str, tag: str) -> Any:
    """A YAML 1.2 core int or float, rewritten in JSON's grammar and read exactly as JSON reads it."""
    if tag == _INT and (decimal := _CORE_DECIMAL.match(text)):
        sign, digits = decimal.groups()
        return _json_number(("-" if sign == "-" else "") + (digits.lstrip("0") or "0"), text)
    if tag == _INT and _CORE_OCTAL_HEX.match(text):
        value = int(text[2:], 8 if text[1] == "o" else 16)
        if value.bit_length() > 1100:  # past the largest double, as its decimal spelling in JSON is
            raise _yaml_error(text, "number is infinity when parsed as double")
        return _json_number(str(value), text)
    if tag == _FLOAT and (number := _CORE_FLOAT.match(text)):
        sign, bare_fraction, whole, fraction, exponent = number.groups()
        if bare_fraction is not None:
            whole, fraction = "0", bare_fraction
        spelled = ("-" if sign == "-" else "") + (whole.lstrip("0") or "0")
        return _json_number(spelled + "." + (fraction or "0") + (exponent or ""), text)
    if tag == _FLOAT and _CORE_SPECIAL_FLOAT.match(text):
        raise HttpError(400, "Numbers must be finite")
    raise _yaml_error(text, f"not a {tag.removeprefix(_TAG)}")


def _scalar(node: yaml.ScalarNode) -> Any:
    tag, text = node.tag, node.value
    if tag == _STR:
        return text
    if tag == _NULL and _CORE_NULL.match(text):
        return None
    if tag == _BOOL and _CORE_BOOL.match(text):
        return text[0] in "tT"
    if tag in (_INT, _FLOAT):
        return _core_number(text, tag)
    if tag in (_NULL, _BOOL):
        raise _yaml_error(text, f"not a {tag.removeprefix(_TAG)}")
    raise HttpError(400, f"Unsupported YAML tag {tag!r}")


class _Open:
    """A collection being measured: its children not yet counted, and its size and height so far."""

    __slots__ = ("children", "height", "node", "size")

    def __init__(self, node: yaml.Node) -> None:
        self.node = node
        self.children: Iterator[yaml.Node] = (
            chain.from_iterable(node.value) if isinstance(node, yaml.MappingNode) else iter(node.value)
        )
        self.size = 1
        self.height = 1


def _measure(root: yaml.Node, max_bytes: int, max_depth: int) -> None:
    """Refuse a composed YAML graph whose expanded content passes ``max_bytes`` (413) or whose
    expanded nesting passes ``max_depth`` (400), without expanding it.

    The content is each scalar's UTF-8 bytes plus one per node, never more than the body for a
    document without aliases. It is counted in document order as the expansion would build it; an
    alias is the node it names, measured once and then counted whole at each use, so a "billion
    laughs" is refused after a pass over its few distinct nodes and the aliases read before the limit.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(node): expanded size and height
    path: list[_Open] = []
    open_ids: set[int] = set()
    total = 0
    pending: yaml.Node | None = root
    while True:
        if pending is not None:
            node, pending = pending, None
            key = id(node)
            if key in measured:
                size, height = measured[key]
            elif key in open_ids:
                raise HttpError(400, "Malformed YAML: an alias refers to a node that contains it")
            elif isinstance(node, yaml.ScalarNode):
                text = node.value
                size = 1 + (len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass")))
                height = 1
                measured[key] = size, height
            else:
                path.append(_Open(node))
                open_ids.add(key)
                size, height = 1, 0
            total += size
            if total > max_bytes:
                raise HttpError(413, f"Document expands beyond {max_bytes} bytes")
            if len(path) + height > max_depth:
                raise HttpError(400, f"Document is nested deeper than {max_depth} levels")
            if not path:
                return
            if height:  # counted whole: add it to the collection that holds it
                holder = path[-1]
                holder.size += size
                holder.height = max(holder.height, height + 1)
        current = path[-1]
        pending = next(current.children, None)
        if pending is not None:
            continue
        path.pop()
        open_ids.discard(id(current.node))
        measured[id(current.node)] = current.size, current.height
        if not path:
            return
        holder = path[-1]
        holder.size += current.size
        holder.height = max(holder.height, current.height + 1)


def _construct(root: yaml.Node) -> Any:
    """The JSON value of a measured YAML graph; every use of an alias gets its own copy."""
    scalars: dict[int, Any] = {}

    def scalar(node: yaml.ScalarNode) -> Any:
        key = id(node)
        if key not in scalars:
            scalars[key] = _scalar(node)
        return scalars[key]

    top: list[Any] = [None]
    stack: list[tuple[yaml.Node, Any, Any]] = [(root, top, 0)]
    while stack:
        node, parent, slot = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            parent[slot] = scalar(node)
        elif node.tag not in (_SEQ, _MAP):
            raise HttpError(400, f"Unsupported YAML tag {node.tag!r}")
        elif isinstance(node, yaml.SequenceNode):
            items: list[Any] = [None] * len(node.value)
            parent[slot] = items
            stack.extend((item, items, index) for index, item in enumerate(node.value))
        else:
            values: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    raise HttpError(400, "Object keys must be strings, got a collection")
                name = scalar(key_node)
                if not isinstance(name, str):
                    raise HttpError(400, f"Object keys must be strings, got {name!r}")
                values[name] = value_node  # the last of repeated keys wins, as in JSON
            mapping: dict[str, Any] = dict.fromkeys(values)
            parent[slot] = mapping
            stack.extend((value, mapping, name) for name, value in values.items())
    return top[0]


def load_yaml(body: bytes, *, max_bytes: int, max_depth: int) -> Any:
    """Read one YAML document with the YAML 1.2 core schema, as its JSON equivalent would read.

    Its expanded content is bounded by ``max_bytes`` (413) and its nesting by ``max_depth`` (400).
    """
    loader = _Loader(body)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError as exc:
        raise HttpError(400, f"Malformed YAML: {exc}") from None
    except RecursionError:
        raise HttpError(400, f"Document is nested deeper than {max_depth} levels") from None
    finally:
        loader.dispose()
    if root is None:
        return None
    if b"*" not in body:  # without an alias the content is no larger than the body, already bounded
        return _construct(root)
    _measure(root, max_bytes, max_depth)
    document = _construct(root)
    # The measure counts characters; JSON, as it is stored and served, may spell them longer
    # (escapes, empty containers): the stored form is held to the same bound as a JSON body.
    try:
        stored_size = len(orjson.dumps(document))
    except orjson.JSONEncodeError as exc:
        raise HttpError(400, f"Document cannot be stored: {exc}") from None
    if stored_size > max_bytes:
        raise HttpError(413, f"Document expands beyond {max_bytes} bytes")
    return document


def parse_document(
    body: bytes, content_type: str | None, *, max_depth: int, max_nodes: int, max_bytes: int
) -> Any:
    """Decode a JSON or YAML request body; raise 400, 413 or 415 with a clear reason."""
    kind = media_type(content_type)
    if kind in JSON_TYPES or kind in (MERGE_PATCH_TYPE, JSON_PATCH_TYPE) or kind.endswith("+json"):
        try:
            document = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise HttpError(400, f"Malformed JSON: {exc}") from None
    elif kind in YAML_TYPES:
        document = load_yaml(body, max_bytes=max_bytes, max_depth=max_depth)
    elif not kind:
        raise HttpError(415, "Missing Content-Type: send application/json or text/yaml")
    else:
        raise HttpError(415, f"Unsupported Content-Type {kind!r}: send application/json or text/yaml")
    check_document(document, max_depth, max_nodes)
    return document


def dump_json(data: Any) -> bytes:
    return orjson.dumps(data)


def dump_yaml(data: Any) -> bytes:
    text: str = yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return text.encode()
