"""``python -m bench``: start each server, seed it, load it with wrk, and report the medians."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import httpx

from bench import processes, profile, servers
from bench.console_seed import seed_console
from bench.load import Load, Measure, run_wrk
from bench.report import Row, add_ratios, baseline_ratios, costs, table, write_chart, write_jsonl
from bench.scenarios import (
    COMPARISONS,
    FHIRBOX_SCENARIOS,
    PEER_SCENARIOS,
    Comparison,
    Scenario,
    console_loads,
    peer_loads,
    seed_fhirbox,
)
from bench.tools import ensure_peer, ensure_wrk

RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    names = sorted({s.name for s in FHIRBOX_SCENARIOS})
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure fhirbox and node-oidc-provider side by side: one server process pinned to one "
        "CPU, wrk pinned to another, each scenario run several times, the median reported.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--runs", type=int, default=3, help="runs per scenario; the median is reported")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each scenario")
    parser.add_argument(
        "--smoke", action="store_true", help="1 s per scenario, one run, no peer, 4 connections"
    )
    parser.add_argument("--no-peer", action="store_true", help="do not run node-oidc-provider")
    parser.add_argument(
        "--no-compare",
        action="store_true",
        help="do not measure the cost of features (scenarios again with a feature turned off)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="fhirbox server processes (default 1), one CPU each; wrk gets the CPUs left, a thread per CPU",
    )
    parser.add_argument(
        "--backend",
        choices=("sqlite", "postgres", "all"),
        default="all",
        help=f"all = SQLite, plus PostgreSQL when {servers.POSTGRES_ENV} is set",
    )
    parser.add_argument("--scenarios", nargs="+", choices=names, metavar="NAME", help=f"only these: {names}")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after each fhirbox scenario, one extra unmeasured run sampled by py-spy",
    )
    parser.add_argument(
        "--baseline",
        metavar="REV",
        help="also run the chosen scenarios on commit REV of this repository (a temporary git worktree, "
        "this Python) and print this code's ratio to it",
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS, help="where the .jsonl and .png go")
    args = parser.parse_args(argv)
    if args.smoke:
        args.duration, args.runs, args.warmup, args.no_peer = 1.0, 1, 0.0, True
        args.connections = min(args.connections, 4)
    if args.duration < 1 or args.runs < 1 or args.connections < 1 or args.workers < 1:
        parser.error("--duration must be >= 1, --runs, --connections and --workers >= 1")
    return args


def backends(choice: str) -> list[str]:
    has_postgres = bool(os.environ.get(servers.POSTGRES_ENV))
    if choice == "postgres" and not has_postgres:
        raise SystemExit(f"bench: --backend postgres needs {servers.POSTGRES_ENV}")
    if choice == "all":
        return ["sqlite", "postgres"] if has_postgres else ["sqlite"]
    return [choice]


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(
        self, args: argparse.Namespace, wrk: str, cpus: processes.CpuPlan, workdir: Path, prefix: Path
    ) -> None:
        self.args = args
        self.prefix = prefix  # results go to <prefix>.jsonl, <prefix>.png, <prefix>-profile-*
        self.wrk = wrk
        self.cpus = cpus
        self.workdir = workdir
        self.rows: list[Row] = []
        self.baseline: Path | None = None  # the src directory of --baseline's checkout

    def wanted(self, scenarios: Sequence[Scenario]) -> list[Scenario]:
        chosen = self.args.scenarios
        return [s for s in scenarios if not chosen or s.name in chosen]

    def measure(
        self,
        system: str,
        backend: str,
        scenario: str,
        server: servers.Server,
        load: Load | None,
        notes: list[str],
        setting: str | None = None,
    ) -> None:
        """Warm up, run the scenario ``--runs`` times and add the median row; a crash is a FAILED row."""
        try:
            self._measure(system, backend, scenario, server, load, notes)
        except RuntimeError as exc:
            log(f"{system}/{scenario}/{backend} failed: {exc}")
            self.rows.append(self._failed_row(system, scenario, backend, [*notes, str(exc)[:300]]))
        self.rows[-1].setting = setting

    def _measure(
        self,
        system: str,
        backend: str,
        scenario: str,
        server: servers.Server,
        load: Load | None,
        notes: list[str],
    ) -> None:
        args = self.args
        label = f"{system}/{scenario}/{backend}"
        if load is None:
            self.rows.append(self._failed_row(system, scenario, backend, [*notes, "no load defined"]))
            return
        server.check_alive()
        if args.warmup > 0:
            self.wrk_run(server, load, args.warmup)
        processes.reset_peak_rss(server.pid)
        runs: list[Measure] = []
        for n in range(args.runs):
            cpu_before = processes.cpu_seconds(server.pid)
            measure = self.wrk_run(server, load, args.duration)
            cpu_after = processes.cpu_seconds(server.pid)
            if cpu_before is not None and cpu_after is not None:
                measure = dataclasses.replace(measure, server_cpu_s=cpu_after - cpu_before)
            runs.append(measure)
            log(
                f"{label} run {n + 1}/{args.runs}: {measure.rate:,.0f} req/s, p99 {measure.p99_ms:.2f} ms, "
                f"{measure.errors} errors, server CPU {measure.cpu_us_per_request or 0:.0f} µs/req"
            )
        server.check_alive()
        if args.profile and system == "fhirbox":
            self.profile(label, server, load)
        median = sorted(runs, key=lambda m: m.rate)[len(runs) // 2]
        errors = sum(m.errors for m in runs)
        failures = [m.first_failure for m in runs if m.first_failure]
        if errors and not failures:
            failures = ["socket errors (connect/read/write/timeout)"]
        self.rows.append(
            Row(
                system=system,
                scenario=scenario,
                backend=backend,
                req_per_s=round(median.rate, 1),
                p50_ms=median.p50_ms,
                p99_ms=median.p99_ms,
                errors=errors,
                peak_rss_mb=processes.peak_rss_mb(server.pid),
                runs_req_per_s=[round(m.rate, 1) for m in runs],
                cpu_us_per_req=(
                    round(median.cpu_us_per_request, 1) if median.cpu_us_per_request is not None else None
                ),
                connections=args.connections,
                duration_s=args.duration,
                failed=errors > 0,
                notes=([*failures[:1], *notes] if errors else []),
            )
        )

    def wrk_run(self, server: servers.Server, load: Load, seconds: float) -> Measure:
        cpus = self.cpus
        return run_wrk(
            self.wrk, cpus.load, cpus.load_threads, server.url, load, seconds, self.args.connections
        )

    def profile(self, label: str, server: servers.Server, load: Load) -> None:
        folded = Path(f"{self.prefix}-profile-{label.replace('/', '-')}.folded")
        folded.parent.mkdir(parents=True, exist_ok=True)
        recorder = profile.start_recording(server.pid, self.args.duration, folded, self.cpus.load)
        try:
            self.wrk_run(server, load, self.args.duration + 1)
            recorder.wait(60)
        finally:
            processes.stop(recorder)
        if folded.exists():
            summary = profile.summarize(folded)
            folded.with_suffix(".txt").write_text(f"{label}\n{summary}")
            log(f"profile of {label}: {folded.with_suffix('.txt')}")
        else:
            log(f"profile of {label}: py-spy wrote nothing ({processes.tail(folded.with_suffix('.log'))})")

    def _failed_row(self, system: str, scenario: str, backend: str, notes: list[str]) -> Row:
        return Row(system, scenario, backend, 0.0, 0.0, 0.0, 1, None, [], self.args.connections,
                   self.args.duration, True, notes=notes)  # fmt: skip

    def run_fhirbox(self, backend: str) -> None:
        scenarios = self.wanted(FHIRBOX_SCENARIOS)
        for variant in dict.fromkeys(s.variant for s in scenarios):
            self.run_fhirbox_server(backend, variant, scenarios)
        if self.baseline is not None:
            # The same requests to the other commit, with its own defaults (no feature turned off).
            same = [s for s in scenarios if s.variant != "console" and "audit=off" not in s.variant]
            for variant in dict.fromkeys(s.variant for s in same):
                self.run_fhirbox_server(backend, variant, same, system="baseline")
        if self.args.no_compare:
            return
        for comparison in COMPARISONS:
            compared = [s for s in scenarios if s.name in comparison.scenarios]
            for variant in dict.fromkeys(s.variant for s in compared):
                self.run_fhirbox_server(backend, variant, compared, comparison)

    def run_fhirbox_server(
        self,
        backend: str,
        variant: str,
        scenarios: Sequence[Scenario],
        comparison: Comparison | None = None,
        system: str = "fhirbox",
    ) -> None:
        """One server signing with ``variant`` (with ``comparison``'s settings), its scenarios measured;
        ``system`` "baseline": the ``--baseline`` commit's server."""
        setting = comparison.setting if comparison is not None else None
        with servers.fresh_database(backend, self.workdir) as url:
            alg = variant
            if variant == "console":
                alg = "ES256"
                clients, events = (100, 2000) if self.args.smoke else (1000, 100_000)
                log(f"seeding {clients:,} Clients and {events:,} AuditEvents for the console")
                seed_console(url, clients=clients, events=events)
            log(
                f"starting {system} ({backend}, signing {alg}, {self.args.workers} worker(s)"
                f"{', ' + setting if setting else ''}) "
                f"on CPU {self.cpus.server}"
            )
            server = servers.start_fhirbox(
                url,
                alg,
                self.cpus.server,
                self.workdir,
                self.args.workers,
                comparison.env if comparison else None,
                self.baseline if system == "baseline" else None,
            )
            try:
                try:
                    loads, notes = seed_fhirbox(server.url)
                    if variant == "console":
                        loads.update(console_loads(server.url))
                except httpx.HTTPError as exc:
                    loads, notes = {}, {"": [f"seeding failed: {exc!r}"]}
                for note in (n for group in notes.values() for n in group):
                    log(f"seeding: {note}")
                for scenario in (s for s in scenarios if s.variant == variant):
                    scenario_notes = [*notes.get("", []), *notes.get(scenario.name, [])]
                    load = loads.get(scenario.name)
                    self.measure(system, backend, scenario.name, server, load, scenario_notes, setting)
            finally:
                processes.stop(server.proc)

    def run_peer(self, script: Path) -> None:
        scenarios = self.wanted(PEER_SCENARIOS)
        if not scenarios:
            return
        loads = peer_loads()
        # One node process, as the peer runs by default (--workers does not apply to it).
        cpu = self.cpus.server.split(",")[0]
        for variant in dict.fromkeys(s.variant for s in scenarios):
            api_alg = variant.removeprefix("peer-")
            log(f"starting node-oidc-provider (resource https://api.example.com/: {api_alg}) on CPU {cpu}")
            server = servers.start_peer(script, cpu, self.workdir, api_alg)
            try:
                for scenario in (s for s in scenarios if s.variant == variant):
                    self.measure("peer", "memory", scenario.name, server, loads.get(scenario.name), [])
            finally:
                processes.stop(server.proc)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = processes.bench_cpus(args.workers)
    if cpus.shared:
        log(
            f"{args.workers} workers and wrk share {os.cpu_count()} CPUs: the figures show what this machine "
            "allows, not how throughput grows with processes"
        )
    chosen_backends = backends(args.backend)
    wrk = ensure_wrk()
    peer_script = None if args.no_peer else ensure_peer()
    if args.profile:
        profile.py_spy()
    started = datetime.datetime.now(datetime.UTC)
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    with (
        processes.signals_unwind(),
        tempfile.TemporaryDirectory(prefix="fhirbox-bench-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        bench = Bench(args, wrk, cpus, Path(tmp), args.results_dir / stamp)
        if args.baseline:
            bench.baseline = stack.enter_context(servers.checkout(args.baseline, Path(tmp)))
        try:
            for backend in chosen_backends:
                bench.run_fhirbox(backend)
            if peer_script is not None:
                bench.run_peer(peer_script)
        except KeyboardInterrupt:
            log("interrupted; every started process was stopped")
            return 130
        except processes.Interrupted as exc:
            log(f"stopped by {exc}; every started process was stopped")
            return 143
    rows = bench.rows
    add_ratios(rows, {s.name: s.peer_match for s in FHIRBOX_SCENARIOS if s.peer_match})
    context: dict[str, object] = {
        "timestamp": started.isoformat(timespec="seconds"),
        "machine": f"{platform.node()} {platform.machine()} {_cpu_model()}, {os.cpu_count()} CPUs",
        "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
        "runs": args.runs,
        "workers": args.workers,
        "cpus": {"server": cpus.server, "load": cpus.load, "wrk_threads": cpus.load_threads},
        "baseline": args.baseline,
    }
    jsonl = args.results_dir / f"{stamp}.jsonl"
    chart = args.results_dir / f"{stamp}.png"
    write_jsonl(rows, jsonl, context)
    write_chart(rows, chart, f"fhirbox bench {context['timestamp']}, {args.connections} connections, "
                f"{args.duration:g} s x {args.runs}")  # fmt: skip
    print(table(rows))
    for line in costs(rows, {c.setting: c.feature for c in COMPARISONS}):
        print(line)
    for line in baseline_ratios(rows, args.baseline or ""):
        print(line)
    print(f"\nresults: {jsonl}\nchart:   {chart}")
    summary = statistics.median([r.req_per_s for r in rows]) if rows else 0.0
    log(f"{len(rows)} rows, median {summary:,.0f} req/s, {sum(r.failed for r in rows)} failed")
    return 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
