"""One wrk run: the request a scenario sends, the run pinned to the load CPU, its JSON result parsed."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench import processes

SCRIPTS = Path(__file__).resolve().parent / "wrk"


@dataclass(frozen=True)
class Load:
    """What wrk sends: a fixed request, or (``spread`` > 0) the same request over ``spread`` paths."""

    method: str
    path: str
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    spread: int = 0

    def script_args(self) -> list[str]:
        headers = [f"{name}: {value}" for name, value in self.headers.items()]
        if self.spread:
            return [
                str(SCRIPTS / "spread.lua"),
                self.method,
                self.path,
                str(self.spread),
                self.body or "",
                *headers,
            ]
        return [str(SCRIPTS / "static.lua"), self.method, self.path, self.body or "-", *headers]


@dataclass(frozen=True)
class Measure:
    """The figures of one wrk run."""

    requests: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    first_failure: str | None
    server_cpu_s: float | None = None  # the server's CPU time during the run (set by the harness)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def cpu_us_per_request(self) -> float | None:
        if self.server_cpu_s is None or not self.requests:
            return None
        return self.server_cpu_s * 1e6 / self.requests

    @property
    def errors(self) -> int:
        return self.non2xx + self.socket_errors


def run_wrk(
    wrk: str, cpus: str, threads: int, base_url: str, load: Load, seconds: float, connections: int
) -> Measure:
    """Run wrk (``threads`` threads, pinned to ``cpus``) for ``seconds`` against ``base_url`` and parse
    its result."""
    script, *args = load.script_args()
    command = [
        "taskset", "-c", cpus, wrk,
        "-t", str(max(1, min(threads, connections))), "-c", str(connections),
        "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", script, base_url, "--", *args,
    ]  # fmt: skip
    env = {**os.environ, "LUA_PATH": f"{SCRIPTS}/?.lua;;"}
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    )
    processes.track(proc)
    try:
        out, err = proc.communicate(timeout=seconds + 60)
    finally:
        processes.stop(proc)
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("BENCH_RESULT "):
            data = json.loads(line.removeprefix("BENCH_RESULT "))
            return Measure(
                requests=int(data["requests"]),
                seconds=int(data["duration_us"]) / 1e6,
                non2xx=int(data["non2xx"]),
                socket_errors=sum(
                    int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
                ),
                p50_ms=int(data["p50_us"]) / 1000,
                p99_ms=int(data["p99_us"]) / 1000,
                first_failure=data["first_failure"],
            )
    raise RuntimeError(f"wrk gave no result (exit {proc.returncode}): {err.decode(errors='replace')[-2000:]}")
