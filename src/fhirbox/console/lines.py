"""Where in a policy's text an API error points: the line the editor marks.

Parse errors name their line (``line 3``); validation errors name a field (``matcho.uri``,
``and[1].engine``), found here by walking the YAML node tree of the text (JSON is read as YAML)."""

from __future__ import annotations

import re

import yaml

_LINE = re.compile(r"\bline (\d{1,9})\b")
_FIELD = re.compile(r"^(?:Invalid AccessPolicy: )?([A-Za-z0-9_\-/$.\[\]]+): ")
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def error_line(text: str, message: str) -> int | None:
    """The 1-based line of ``text`` that ``message`` (the API's error) is about, or None."""
    found = _LINE.search(message)
    if found:
        return int(found.group(1))
    field = _FIELD.match(message)
    return field_line(text, field.group(1)) if field else None


def field_line(text: str, path: str) -> int | None:
    """The line of the deepest part of ``path`` (``matcho.uri``, ``link[0]``) present in ``text``."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = None
    for name, index in _STEP.findall(path):
        if isinstance(node, yaml.MappingNode) and name:
            match = next((pair for pair in node.value if getattr(pair[0], "value", None) == name), None)
            if match is None:
                break
            line = match[0].start_mark.line + 1
            node = match[1]
        elif isinstance(node, yaml.SequenceNode) and index and int(index) < len(node.value):
            node = node.value[int(index)]
            line = node.start_mark.line + 1
        else:
            break
    return line
