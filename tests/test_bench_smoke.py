"""The benchmark harness keeps working: its smoke mode runs every scenario once and writes its results."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO


def test_bench_smoke_writes_one_result_row_and_a_chart_per_scenario(tmp_path: Path) -> None:
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the benchmark pins the server and wrk to separate CPUs and refuses with fewer than 2")
    from bench.scenarios import COMPARISONS, FHIRBOX_SCENARIOS
    from bench.tools import ensure_wrk

    try:
        ensure_wrk()
    except RuntimeError as exc:
        pytest.skip(f"wrk is missing and could not be installed: {exc}")

    results = tmp_path / "results"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--backend", "sqlite", "--results-dir", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "get-basic-root" in done.stdout  # the table

    [jsonl] = results.glob("*.jsonl")
    [chart] = results.glob("*.png")
    assert chart.read_bytes().startswith(b"\x89PNG")
    every_row = [json.loads(line) for line in jsonl.read_text().splitlines()]
    rows = {row["scenario"]: row for row in every_row if row["setting"] is None}
    assert sorted(rows) == sorted(s.name for s in FHIRBOX_SCENARIOS)
    # The cost of each feature: its scenarios again with the feature off, stated after the table.
    compared = {(row["scenario"], row["setting"]) for row in every_row if row["setting"] is not None}
    assert compared == {(name, c.setting) for c in COMPARISONS for name in c.scenarios}
    assert all(row["status"] == "ok" for row in every_row)
    for comparison in COMPARISONS:
        assert f"cost of the {comparison.feature} ({comparison.setting} to turn it off)" in done.stdout
    assert all(row["system"] == "fhirbox" and row["backend"] == "sqlite" for row in rows.values())

    for name, row in rows.items():
        assert row["errors"] == 0 and row["status"] == "ok", (name, row["notes"])
        assert row["req_per_s"] > 0
    for row in rows.values():
        # A scenario with errors is reported as failed, never as fast.
        assert row["status"] == ("FAILED" if row["errors"] else "ok")


def test_bench_baseline_runs_the_same_requests_on_another_commit_and_prints_the_ratio(tmp_path: Path) -> None:
    """``--baseline REV`` measures REV's server (a temporary worktree) beside this code's, same run."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("the benchmark pins the server and wrk to separate CPUs and refuses with fewer than 2")
    if subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("not a git checkout")
    results = tmp_path / "results"
    command = [sys.executable, "-m", "bench", "--smoke", "--backend", "sqlite"]
    done = subprocess.run(
        [*command, "--scenarios", "get-bearer-opaque", "--baseline", "HEAD", "--results-dir", str(results)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [jsonl] = results.glob("*.jsonl")
    rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
    # This code, HEAD, and this code with the access log off (a feature-cost row, not run on HEAD).
    assert sorted((row["system"], row["setting"] or "") for row in rows) == [
        ("baseline", ""),
        ("fhirbox", ""),
        ("fhirbox", "FHIRBOX_ACCESS_LOG=false"),
    ]
    assert all(row["status"] == "ok" and row["baseline"] == "HEAD" for row in rows)
    assert "this code vs HEAD (same run):" in done.stdout
    assert "get-bearer-opaque (sqlite): " in done.stdout
    # The feature's cost compares this code with and without it, never the baseline's row.
    ours = next(r for r in rows if r["system"] == "fhirbox" and r["setting"] is None)
    assert f"{ours['req_per_s']:,.0f} req/s on" in done.stdout
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True)
    assert "fhirbox-bench-" not in worktrees.stdout  # the temporary checkout is gone
    bad = subprocess.run([*command, "--baseline", "no-such-rev"], cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "--baseline no-such-rev" in bad.stderr


def test_ratios_pair_the_runs_of_each_round_so_a_slow_moment_slows_both_sides() -> None:
    from bench.report import Row, paired_ratio

    def row(runs: list[float]) -> Row:
        median = statistics.median(runs)
        return Row("fhirbox", "token-opaque", "sqlite", median, 0, 0, 0, None, runs, 32, 5, False)

    # Round 2 ran while the machine was busy and slowed both sides: every round's ratio is 2.
    ours, peer = row([2000.0, 1000.0, 1500.0]), row([1000.0, 500.0, 1000.0])
    assert paired_ratio(ours, peer) == 2.0
    assert ours.req_per_s / peer.req_per_s == 1.5  # the medians come from different rounds
    # Runs that cannot be paired: the ratio of the medians.
    assert paired_ratio(row([2000.0, 1000.0, 3000.0]), row([500.0])) == 2000.0 / 500.0
