"""A bar chart as SVG geometry, computed here so the template only places rectangles (no script,
no inline style: the CSP forbids both)."""

from __future__ import annotations

from dataclasses import dataclass

WIDTH = 600
HEIGHT = 120
AXIS = 16


@dataclass(frozen=True, slots=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    value: int


@dataclass(frozen=True, slots=True)
class BarChart:
    bars: list[Bar]
    peak: int
    width: int = WIDTH
    height: int = HEIGHT
    axis: int = AXIS


def bar_chart(values: list[int], labels: list[str]) -> BarChart:
    """One bar per value, scaled so the largest fills the plot's height."""
    peak = max(values, default=0)
    plot = HEIGHT - AXIS
    slot = WIDTH / max(1, len(values))
    bars = []
    for index, (value, label) in enumerate(zip(values, labels, strict=True)):
        height = plot * value / peak if peak else 0.0
        bars.append(
            Bar(
                round(index * slot + 1, 2),
                round(plot - height, 2),
                round(slot - 2, 2),
                round(height, 2),
                label,
                value,
            )
        )
    return BarChart(bars, peak)
