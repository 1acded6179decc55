"""Query strings and form bodies read exactly as ``urllib.parse.parse_qsl`` reads them."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhirbox.http.formats import parse_pairs

# Text made of what matters to the parser: separators, equals signs, escapes, plus signs, letters.
pair_text = st.text(alphabet=st.sampled_from(list("&=;%+ab2Fé \x00")), max_size=40)


def reference(text: str, strict: bool) -> list[tuple[str, str]] | str:
    try:
        return parse_qsl(text, keep_blank_values=True, strict_parsing=strict, errors="strict")
    except (ValueError, UnicodeDecodeError) as error:
        return type(error).__name__


def ours(text: str, strict: bool) -> list[tuple[str, str]] | str:
    try:
        return parse_pairs(text, strict=strict)
    except (ValueError, UnicodeDecodeError) as error:
        return type(error).__name__


@pytest.mark.parametrize("strict", [False, True])
@given(text=pair_text)
def test_pairs_are_read_as_parse_qsl_reads_them(strict: bool, text: str) -> None:
    # UnicodeDecodeError is a ValueError: compare the exception each raises, or the pairs.
    assert ours(text, strict) == reference(text, strict)


def test_a_pair_without_equals_is_refused_only_when_strict() -> None:
    assert parse_pairs("grant_type=client_credentials&scope", strict=False) == [
        ("grant_type", "client_credentials"),
        ("scope", ""),
    ]
    with pytest.raises(ValueError, match="bad query field"):
        parse_pairs("grant_type=client_credentials&scope", strict=True)
