"""The results: one row per scenario, printed as a table, written as JSON Lines and as a bar chart."""

from __future__ import annotations

import dataclasses
import json
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Row:
    """The median of a scenario's runs (by req/s) on one system and backend."""

    system: str
    scenario: str
    backend: str
    req_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    peak_rss_mb: float | None
    runs_req_per_s: list[float]
    connections: int
    duration_s: float
    failed: bool
    # Server CPU time (all its processes; not PostgreSQL's) per request in the median run, in µs.
    cpu_us_per_req: float | None = None
    ratio_to_peer: float | None = None
    # The FHIRBOX_* settings of a comparison row (a feature turned off), None for the server as shipped.
    setting: str | None = None
    peer_scenario: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "FAILED" if self.failed else "ok"


def paired_ratio(row: Row, other: Row) -> float:
    """``row``'s req/s over ``other``'s: the median of the ratios of runs made in the same round (the
    harness runs every scenario once per round, the same scenario on each server back to back), so a
    machine that is slower for a while slows both sides of each ratio. Rows with different numbers of
    runs: the ratio of their medians."""
    pairs = [a / b for a, b in zip(row.runs_req_per_s, other.runs_req_per_s, strict=False) if b > 0]
    if len(row.runs_req_per_s) != len(other.runs_req_per_s) or len(pairs) != len(row.runs_req_per_s):
        return row.req_per_s / other.req_per_s
    return statistics.median(pairs)


def add_ratios(rows: Sequence[Row], matches: dict[str, str]) -> None:
    """Set each fhirbox token row's ratio to the peer row of the matching scenario (same run)."""
    peer = {row.scenario: row for row in rows if row.system == "peer"}
    for row in rows:
        match = matches.get(row.scenario)
        if row.system != "fhirbox" or match is None:
            continue
        row.peer_scenario = match
        other = peer.get(match)
        if other is not None and not other.failed and not row.failed and other.req_per_s > 0:
            row.ratio_to_peer = paired_ratio(row, other)


def costs(rows: Sequence[Row], features: dict[str, str]) -> list[str]:
    """One line per comparison row: the throughput of the server as shipped against the same scenario
    with a feature off (``features``: setting to feature name), and the cost in percent."""
    shipped = {
        (row.scenario, row.backend): row for row in rows if row.setting is None and row.system == "fhirbox"
    }
    lines = []
    for row in rows:
        if row.setting is None:
            continue
        base = shipped.get((row.scenario, row.backend))
        label = f"cost of the {features.get(row.setting, row.setting)} ({row.setting} to turn it off)"
        if base is None or base.failed or row.failed or row.req_per_s <= 0:
            lines.append(f"{label}: {row.scenario}/{row.backend}: not measured (a run failed or was skipped)")
            continue
        cost = (1 - paired_ratio(base, row)) * 100
        lines.append(
            f"{label}: {row.scenario}/{row.backend}: {base.req_per_s:,.0f} req/s on, "
            f"{row.req_per_s:,.0f} off (medians): the {features.get(row.setting, row.setting)} costs "
            f"{cost:.1f}% (round by round)"
        )
    return lines


def baseline_ratios(rows: Sequence[Row], revision: str) -> list[str]:
    """For each scenario run by both this code and ``--baseline``: the ratio of their req/s, and of
    their CPU per request (below 1: this code is cheaper)."""
    baseline = {
        (row.scenario, row.backend): row for row in rows if row.system == "baseline" and not row.failed
    }
    lines = []
    for row in rows:
        before = baseline.get((row.scenario, row.backend))
        if row.system != "fhirbox" or row.setting or row.failed or before is None or not before.req_per_s:
            continue
        line = f"  {row.scenario} ({row.backend}): {paired_ratio(row, before):.2f}x req/s"
        if row.cpu_us_per_req and before.cpu_us_per_req:
            line += f", {row.cpu_us_per_req / before.cpu_us_per_req:.2f}x CPU per request"
        lines.append(line)
    return [f"\nthis code vs {revision} (same run):", *lines] if lines else []


def table(rows: Sequence[Row]) -> str:
    """A fixed-width table, one row per scenario; failed rows show FAILED instead of their rate."""
    header = (
        "system", "scenario", "backend", "req/s", "p50 ms", "p99 ms", "errors", "peak MiB", "CPU µs/req",
        "vs peer",
    )  # fmt: skip
    lines = [header]
    for row in rows:
        lines.append(
            (
                row.system,
                row.scenario if row.setting is None else f"{row.scenario} [{row.setting}]",
                row.backend,
                "FAILED" if row.failed else f"{row.req_per_s:,.0f}",
                f"{row.p50_ms:.2f}",
                f"{row.p99_ms:.2f}",
                str(row.errors),
                f"{row.peak_rss_mb:.0f}" if row.peak_rss_mb is not None else "-",
                f"{row.cpu_us_per_req:.0f}" if row.cpu_us_per_req is not None else "-",
                f"{row.ratio_to_peer:.2f}x" if row.ratio_to_peer is not None else "",
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for n, line in enumerate(lines):
        out.append(
            "  ".join(
                cell.rjust(w) if i >= 3 else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(line, widths, strict=True))
            )
        )
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    failures = [row for row in rows if row.failed]
    for row in failures:
        out.append(f"FAILED {row.system}/{row.scenario}/{row.backend}: {'; '.join(row.notes)[:240]}")
    return "\n".join(out)


def write_jsonl(rows: Sequence[Row], path: Path, context: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as out:
        for row in rows:
            out.write(json.dumps({**context, **dataclasses.asdict(row), "status": row.status}) + "\n")


def write_chart(rows: Sequence[Row], path: Path, title: str) -> None:
    """A horizontal bar chart of req/s per scenario; failed scenarios are marked, not drawn as fast."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{row.system} {row.scenario}{f' [{row.setting}]' if row.setting else ''} ({row.backend})"
        for row in rows
    ]
    values = [0.0 if row.failed else row.req_per_s for row in rows]
    colours = [
        "#b0b0b0" if row.failed else ("#e07b39" if row.system == "peer" else "#3a6ea5") for row in rows
    ]
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(rows) + 1.5))
    positions = list(range(len(rows)))
    ax.barh(positions, values, color=colours)
    ax.set_yticks(positions, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("requests/s (median of runs; one server process on one CPU)")
    ax.set_title(title, fontsize=10)
    top = max(values, default=0.0) or 1.0
    for pos, row in zip(positions, rows, strict=True):
        text = "FAILED" if row.failed else f"{row.req_per_s:,.0f}"
        ax.text((0 if row.failed else row.req_per_s) + top * 0.01, pos, text, va="center", fontsize=7)
    ax.set_xlim(0, top * 1.15)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
