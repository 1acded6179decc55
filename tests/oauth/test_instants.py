"""The instants the server writes (``meta.lastUpdated``, ``Session.start``, ``AuditEvent.recorded``)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from fhirbox.models.session import iso

# From 1970 to 9999: every instant a clock can give, and the edges of rounding to microseconds.
MOMENTS = st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False) | st.integers(
    min_value=0, max_value=253_402_300_799
)


@given(MOMENTS)
def test_iso_is_what_datetime_writes(moment: float) -> None:
    expected = datetime.fromtimestamp(moment, UTC).isoformat(timespec="microseconds")[:-6] + "Z"
    assert iso(moment) == expected


@given(st.integers(min_value=0, max_value=2_000_000_000), st.integers(min_value=0, max_value=999_999))
def test_iso_is_fixed_width_so_text_order_is_time_order(seconds: int, micros: int) -> None:
    earlier, later = seconds + micros / 1_000_000, seconds + micros / 1_000_000 + 0.001
    assert len(iso(earlier)) == len(iso(later)) == 27
    assert iso(earlier) <= iso(later)
