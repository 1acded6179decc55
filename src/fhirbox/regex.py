"""Regular expressions that users write (matcho ``"#regex"``, Client audience ``"#regex"``), run on RE2.

RE2 matches in time linear in the input, so no pattern can stall the server (Python's ``re`` backtracks:
``(a+)+b`` against a long run of ``a`` doubles its work per character). RE2 has no backreferences or
lookaround; such a pattern is an ``UnsupportedRegex`` naming it, which writes answer with 422.

The patterns keep Python's meaning for str text: ``\\d``, ``\\w`` and ``\\s`` are rewritten to the
Unicode classes Python's ``re`` uses (RE2's own are ASCII-only), ``\\Z`` to RE2's ``\\z``, ``\\uXXXX``
to ``\\x{XXXX}`` and ``{,n}`` to ``{0,n}``. ``\\b`` and ``\\B`` are refused: RE2's word boundary is
ASCII-only and cannot be rewritten, and a policy must not silently change meaning.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import re2

_WORD = r"\p{L}\p{N}_"
_SPACE = r"\t\n\v\f\r\x1c-\x1f\x85\p{Z}"
# Python's Unicode classes as RE2 syntax: outside a [...] class, and as members inside one.
_OUTSIDE = {
    "d": r"\p{Nd}",
    "D": r"\P{Nd}",
    "w": f"[{_WORD}]",
    "W": f"[^{_WORD}]",
    "s": f"[{_SPACE}]",
    "S": f"[^{_SPACE}]",
    "Z": r"\z",
}
_INSIDE = {"d": r"\p{Nd}", "D": r"\P{Nd}", "w": _WORD, "s": _SPACE}
_HEX_ESCAPES = {"u": 4, "U": 8}
_HEX = frozenset("0123456789abcdefABCDEF")
_UP_TO = re.compile(r"\{,([0-9]+)\}")  # a server-owned pattern; Python's re is fine for it


class UnsupportedRegex(ValueError):
    """A pattern RE2 cannot run with Python's meaning (or that is no regular expression at all)."""


def _options() -> Any:
    options = re2.Options()
    options.encoding = re2.Options.Encoding.UTF8  # str text: match characters, not Latin-1 bytes
    options.log_errors = False  # a refused pattern is the caller's answer, not a server log line
    options.never_capture = True  # only match or not: RE2 may answer from its DFA alone
    return options


_OPTIONS = _options()
_BOTH = re2._Anchor.ANCHOR_BOTH
_NO_MATCH = -1


@lru_cache(maxsize=4096)
def compile_fullmatch(pattern: str) -> Callable[[str], bool]:
    """A test of whether ``pattern`` matches the whole of a str; ``UnsupportedRegex`` names the reason.

    It calls the binding's ``RE2`` object directly: ``re2.compile(...).fullmatch`` builds a match
    object and maps byte offsets back to characters, several times the cost of the match itself.
    """
    regex = re2._re2.RE2(translate(pattern).encode("utf-8"), _OPTIONS)
    if not regex.ok():
        reason = regex.error()
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise UnsupportedRegex(f"{reason} (patterns run on RE2: no backreferences or lookaround)")
    match = regex.Match

    def matches(text: str) -> bool:
        encoded = text.encode("utf-8", "surrogatepass")
        return bool(match(_BOTH, encoded, 0, len(encoded))[0][0] != _NO_MATCH)

    return matches


def translate(pattern: str) -> str:
    """``pattern`` in RE2 syntax with Python's Unicode meaning of ``\\d \\w \\s`` and friends."""
    out: list[str] = []
    in_class = False
    i, size = 0, len(pattern)
    while i < size:
        char = pattern[i]
        if char == "\\" and i + 1 < size:
            escape = pattern[i + 1]
            i += 2
            if escape in "bB":
                raise UnsupportedRegex(f"\\{escape} is not supported (RE2's word boundary is ASCII-only)")
            if escape in _HEX_ESCAPES:
                digits = pattern[i : i + _HEX_ESCAPES[escape]]
                if len(digits) != _HEX_ESCAPES[escape] or not all(c in _HEX for c in digits):
                    raise UnsupportedRegex(f"incomplete escape \\{escape}{digits}")
                out.append(f"\\x{{{digits}}}")
                i += len(digits)
            elif in_class and escape in "WS":
                raise UnsupportedRegex(f"\\{escape} inside [...] is not supported; use [^...]")
            elif in_class and escape in _INSIDE:
                out.append(_INSIDE[escape])
            elif not in_class and escape in _OUTSIDE:
                out.append(_OUTSIDE[escape])
            else:
                out.append(char + escape)
            continue
        if char == "{" and not in_class:
            upto = _UP_TO.match(pattern, i)
            if upto is not None:  # Python reads {,n} as {0,n}; RE2 as literal text
                out.append(f"{{0,{upto.group(1)}}}")
                i = upto.end()
                continue
        out.append(char)
        i += 1
        if char == "[" and not in_class:
            in_class = True
            if pattern.startswith("^", i):
                out.append("^")
                i += 1
            if pattern.startswith("]", i):  # a leading ] is a member, as in Python
                out.append(r"\]")
                i += 1
        elif char == "]" and in_class:
            in_class = False
    return "".join(out)
