"""Processes the harness starts: each one pinned to a CPU, tracked by PID and always stopped.

Every child runs in its own session, so Ctrl-C in the terminal reaches only the harness, which then
stops each child it started by its PID (SIGTERM, then SIGKILL) in ``stop_all``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

_started: list[subprocess.Popen[bytes]] = []


class Interrupted(Exception):
    """SIGTERM arrived: unwind through every ``finally`` like Ctrl-C does."""


@dataclass(frozen=True)
class CpuPlan:
    """Where the server and wrk run (``taskset -c`` lists), and how many threads wrk uses."""

    server: str
    load: str
    load_threads: int
    shared: bool  # the server processes and wrk share CPUs: fewer CPUs than workers + 1


def bench_cpus(workers: int = 1) -> CpuPlan:
    """One CPU per server process and the rest for wrk (one thread per CPU, at most one per worker);
    refuses when there are fewer than 2 CPUs. With fewer CPUs than ``workers`` + 1 the server processes
    get every CPU and wrk the last one too, and the plan says they share."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit(
            f"bench: refusing to run: only {len(cpus)} CPU available to this process; the server and the "
            "load generator need a CPU each (taskset), otherwise the figures would be meaningless."
        )
    if workers + 1 > len(cpus):
        return CpuPlan(_cpu_list(cpus), str(cpus[-1]), 1, shared=workers > 1)
    load = cpus[workers:][:workers]
    return CpuPlan(_cpu_list(cpus[:workers]), _cpu_list(load), len(load), shared=False)


def _cpu_list(cpus: Sequence[int]) -> str:
    return ",".join(str(cpu) for cpu in cpus)


def _cpu_times(cpus: set[int]) -> tuple[int, int]:
    """(idle, total) jiffies of ``cpus`` from /proc/stat; (0, 0) where there is none."""
    idle = total = 0
    try:
        lines = Path("/proc/stat").read_text().splitlines()
    except OSError:
        return 0, 0
    for line in lines:
        name, _, rest = line.partition(" ")
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            fields = [int(field) for field in rest.split()]
            idle += fields[3] + fields[4]  # idle, iowait
            total += sum(fields[:8])  # up to steal
    return idle, total


def wait_quiet(cpus: str, *, idle: float = 0.9, window: float = 0.5, timeout: float = 30.0) -> float:
    """Wait until the CPUs of ``cpus`` (a ``taskset -c`` list) were at least ``idle`` idle over
    ``window`` seconds, at most ``timeout`` seconds; the seconds waited.

    What the previous run left working (PostgreSQL's checkpointer and autovacuum after thousands of
    inserts, a server's background purge) otherwise runs during the next run, on another server's CPU:
    in one run the peer's first round after PostgreSQL's rows came out at a quarter of its second."""
    wanted = {int(cpu) for cpu in cpus.split(",") if cpu.strip().isdigit()}
    started = time.monotonic()
    if timeout <= 0:
        return 0.0
    before = _cpu_times(wanted)
    while True:
        time.sleep(window)
        after = _cpu_times(wanted)
        spent = after[1] - before[1]
        if spent <= 0 or (after[0] - before[0]) / spent >= idle:
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return time.monotonic() - started
        before = after


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    command: Sequence[str],
    cpus: str,
    log: Path,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` pinned to ``cpus`` (a taskset list), output to ``log``; it is stopped by
    ``stop_all`` at the latest."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            ["taskset", "-c", cpus, *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    track(proc)
    return proc


def track(proc: subprocess.Popen[bytes]) -> None:
    """Have ``stop_all`` stop ``proc`` if it is still running then."""
    _started.append(proc)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> None:
    """Stop one started process by its PID: SIGTERM, then SIGKILL if it does not exit in time."""
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
        except ProcessLookupError:
            pass
    if proc in _started:
        _started.remove(proc)


def stop_all() -> None:
    """Stop every process this harness started that is still running."""
    for proc in list(reversed(_started)):
        stop(proc)


@contextmanager
def signals_unwind() -> Iterator[None]:
    """Make SIGTERM and SIGINT raise, so ``finally`` blocks stop the children; stop any left at the end."""

    def on_term(signum: int, frame: FrameType | None) -> None:
        raise Interrupted(f"signal {signum}")

    previous_term = signal.signal(signal.SIGTERM, on_term)
    # Also when started from a shell that ignores SIGINT in background jobs: Ctrl-C must clean up.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        stop_all()
        signal.signal(signal.SIGTERM, previous_term)
        signal.signal(signal.SIGINT, previous_int)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, log: Path, timeout: float = 60.0) -> None:
    """Wait until ``url`` answers 200; fail with the process's log when it exits or times out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}:\n{tail(log)}")
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s:\n{tail(log)}")


def tail(log: Path, size: int = 3000) -> str:
    try:
        return log.read_text(errors="replace")[-size:]
    except OSError:
        return ""


def reset_peak_rss(pid: int) -> None:
    """Reset the kernel's peak-RSS mark of ``pid`` (``clear_refs`` 5), where permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass  # not permitted: the peak then covers the process's whole life, which is still an upper bound


def peak_rss_mb(pid: int) -> float | None:
    """The peak resident set size (VmHWM) of ``pid`` in MiB, or None when it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` and its descendants (uvicorn workers), in seconds.

    On a shared machine the rate per wall second depends on what else runs; CPU time per request does
    much less, so the harness reports both.
    """
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    pending = [pid]
    try:
        while pending:
            current = pending.pop()
            fields = Path(f"/proc/{current}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    except (OSError, ValueError, IndexError):
        return None
    return total / tick
