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
    AUDIT_OFF_SUFFIX,
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
        "CPU, wrk pinned to another, every scenario run once per round for several rounds, the median "
        "reported.",
    )
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per run (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument(
        "--runs", type=int, default=3, help="rounds: runs per scenario (default 3); the median is reported"
    )
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up before each scenario")
    parser.add_argument(
        "--smoke", action="store_true", help="1 s per scenario, one run, no peer, 4 connections"
    )
    parser.add_argument("--no-peer", action="store_true", help="do not run node-oidc-provider")
    parser.add_argument(
        "--settle",
        type=float,
        default=30.0,
        help="before each run, wait up to this many seconds for the CPUs to be 90%% idle (default 30)",
    )
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
        args.duration, args.runs, args.warmup, args.no_peer, args.settle = 1.0, 1, 0.0, True, 0.0
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


@dataclasses.dataclass
class Subject:
    """One started server and what is measured on it: the scenarios' names, loads and seeding notes."""

    system: str
    backend: str
    server: servers.Server
    loads: dict[str, Load | None]
    notes: dict[str, list[str]]
    setting: str | None = None


class Bench:
    """Every server is started first; then each run of every scenario on every server goes in turn
    (run 1 of all, run 2 of all, ...), so a ratio compares runs made minutes apart at most, never a
    server measured while the machine was busier than when its peer was."""

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
        self.subjects: list[Subject] = []

    def wanted(self, scenarios: Sequence[Scenario]) -> list[Scenario]:
        chosen = self.args.scenarios
        return [s for s in scenarios if not chosen or s.name in chosen]

    # -- starting the servers ------------------------------------------------------------------------
    def start_fhirbox(self, stack: contextlib.ExitStack, backend: str) -> None:
        scenarios = self.wanted(FHIRBOX_SCENARIOS)
        for variant in dict.fromkeys(s.variant for s in scenarios):
            self.start_fhirbox_server(stack, backend, variant, scenarios)
        if self.baseline is not None:
            # The same requests to the other commit, with its own defaults (no feature turned off).
            same = [s for s in scenarios if s.variant != "console" and "audit=off" not in s.variant]
            for variant in dict.fromkeys(s.variant for s in same):
                self.start_fhirbox_server(stack, backend, variant, same, system="baseline")
        if self.args.no_compare:
            return
        for comparison in COMPARISONS:
            compared = [s for s in scenarios if s.name in comparison.scenarios]
            for variant in dict.fromkeys(s.variant for s in compared):
                self.start_fhirbox_server(stack, backend, variant, compared, comparison)

    def start_fhirbox_server(
        self,
        stack: contextlib.ExitStack,
        backend: str,
        variant: str,
        scenarios: Sequence[Scenario],
        comparison: Comparison | None = None,
        system: str = "fhirbox",
    ) -> None:
        """One server signing with ``variant`` (with ``comparison``'s settings), seeded for its scenarios;
        ``system`` "baseline": the ``--baseline`` commit's server."""
        setting = comparison.setting if comparison is not None else None
        url = stack.enter_context(servers.fresh_database(backend, self.workdir))
        alg = variant
        if variant == "console":
            alg = "ES256"
            clients, events = (100, 2000) if self.args.smoke else (1000, 100_000)
            log(f"seeding {clients:,} Clients and {events:,} AuditEvents for the console")
            seed_console(url, clients=clients, events=events)
        log(
            f"starting {system} ({backend}, signing {alg}, {self.args.workers} worker(s)"
            f"{', ' + setting if setting else ''}) on CPU {self.cpus.server}"
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
        stack.callback(processes.stop, server.proc)
        try:
            loads, notes = seed_fhirbox(server.url)
            if variant == "console":
                loads.update(console_loads(server.url))
        except httpx.HTTPError as exc:
            loads, notes = {}, {"": [f"seeding failed: {exc!r}"]}
        for note in (n for group in notes.values() for n in group):
            log(f"seeding: {note}")
        mine = [s.name for s in scenarios if s.variant == variant]
        self.subjects.append(
            Subject(
                system,
                backend,
                server,
                {name: loads.get(name) for name in mine},
                {name: [*notes.get("", []), *notes.get(name, [])] for name in mine},
                setting,
            )
        )

    def start_peer(self, stack: contextlib.ExitStack, script: Path) -> None:
        scenarios = self.wanted(PEER_SCENARIOS)
        loads = peer_loads()
        # One node process, as the peer runs by default (--workers does not apply to it).
        cpu = self.cpus.server.split(",")[0]
        for variant in dict.fromkeys(s.variant for s in scenarios):
            api_alg = variant.removeprefix("peer-")
            log(f"starting node-oidc-provider (resource https://api.example.com/: {api_alg}) on CPU {cpu}")
            server = servers.start_peer(script, cpu, self.workdir, api_alg)
            stack.callback(processes.stop, server.proc)
            mine = [s.name for s in scenarios if s.variant == variant]
            self.subjects.append(
                Subject("peer", "memory", server, {n: loads.get(n) for n in mine}, {n: [] for n in mine})
            )

    # -- measuring -----------------------------------------------------------------------------------
    def measure_all(self) -> None:
        """Warm each scenario up, run every scenario once per round for ``--runs`` rounds, then add a row
        per scenario (the median run); a scenario whose server fails is a FAILED row."""
        args = self.args
        # The same scenario on every server back to back (this code, --baseline, a feature off, the
        # peer), so that the runs a ratio pairs (report.paired_ratio) are seconds apart.
        plan = [(subject, name) for subject in self.subjects for name in subject.loads]
        groups = list(dict.fromkeys(_group(name) for _, name in plan))
        plan.sort(key=lambda step: groups.index(_group(step[1])))
        runs: dict[tuple[int, str], list[Measure]] = {(id(s), name): [] for s, name in plan}
        failures: dict[tuple[int, str], str] = {}

        def attempt(subject: Subject, name: str, seconds: float, counted: bool) -> None:
            key = (id(subject), name)
            load = subject.loads[name]
            if key in failures:
                return
            if load is None:
                failures[key] = "no load defined"
                return
            label = f"{subject.system}/{name}/{subject.backend}"
            try:
                subject.server.check_alive()
                if not counted:
                    self.wrk_run(subject.server, load, seconds)
                    processes.reset_peak_rss(subject.server.pid)
                    return
                waited = processes.wait_quiet(f"{self.cpus.server},{self.cpus.load}", timeout=args.settle)
                if waited > 2:
                    log(f"waited {waited:.1f} s for the CPUs to be quiet before {label}")
                cpu_before = processes.cpu_seconds(subject.server.pid)
                measure = self.wrk_run(subject.server, load, seconds)
                cpu_after = processes.cpu_seconds(subject.server.pid)
            except RuntimeError as exc:
                log(f"{label} failed: {exc}")
                failures[key] = str(exc)[:300]
                return
            if cpu_before is not None and cpu_after is not None:
                measure = dataclasses.replace(measure, server_cpu_s=cpu_after - cpu_before)
            runs[key].append(measure)
            log(
                f"{label} run {len(runs[key])}/{args.runs}: {measure.rate:,.0f} req/s, "
                f"p99 {measure.p99_ms:.2f} ms, {measure.errors} errors, "
                f"server CPU {measure.cpu_us_per_request or 0:.0f} µs/req"
            )

        if args.warmup > 0:
            for subject, name in plan:
                attempt(subject, name, args.warmup, counted=False)
        for _ in range(args.runs):
            for subject, name in plan:
                attempt(subject, name, args.duration, counted=True)
        for subject, name in plan:
            key = (id(subject), name)
            if args.profile and subject.system == "fhirbox" and key not in failures:
                label = f"{subject.system}/{name}/{subject.backend}"
                self.profile(label, subject.server, subject.loads[name])
            notes = subject.notes[name]
            if key in failures:
                row = self._failed_row(subject.system, name, subject.backend, [*notes, failures[key]])
            else:
                row = self._row(subject, name, runs[key], notes)
            row.setting = subject.setting
            self.rows.append(row)

    def _row(self, subject: Subject, name: str, runs: list[Measure], notes: list[str]) -> Row:
        median = sorted(runs, key=lambda m: m.rate)[len(runs) // 2]
        errors = sum(m.errors for m in runs)
        failures = [m.first_failure for m in runs if m.first_failure]
        if errors and not failures:
            failures = ["socket errors (connect/read/write/timeout)"]
        return Row(
            system=subject.system,
            scenario=name,
            backend=subject.backend,
            req_per_s=round(median.rate, 1),
            p50_ms=median.p50_ms,
            p99_ms=median.p99_ms,
            errors=errors,
            peak_rss_mb=processes.peak_rss_mb(subject.server.pid),
            runs_req_per_s=[round(m.rate, 1) for m in runs],
            cpu_us_per_req=(
                round(median.cpu_us_per_request, 1) if median.cpu_us_per_request is not None else None
            ),
            connections=self.args.connections,
            duration_s=self.args.duration,
            failed=errors > 0,
            notes=([*failures[:1], *notes] if errors else []),
        )

    def wrk_run(self, server: servers.Server, load: Load, seconds: float) -> Measure:
        cpus = self.cpus
        return run_wrk(
            self.wrk, cpus.load, cpus.load_threads, server.url, load, seconds, self.args.connections
        )

    def profile(self, label: str, server: servers.Server, load: Load | None) -> None:
        if load is None:
            return
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


def _group(scenario: str) -> str:
    """Scenarios measured back to back: a name, and the same name with the audit trail off."""
    return scenario.removesuffix(AUDIT_OFF_SUFFIX)


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
            with contextlib.ExitStack() as running:
                for backend in chosen_backends:
                    bench.start_fhirbox(running, backend)
                if peer_script is not None:
                    bench.start_peer(running, peer_script)
                bench.measure_all()
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
