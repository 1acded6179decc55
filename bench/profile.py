"""Where the server's time goes: py-spy samples the server during one extra, unmeasured run.

``--profile`` needs py-spy (``.venv/bin/pip install py-spy``); it writes py-spy's collapsed stacks
(``*.folded``, the input of any flame-graph tool) and a summary of own time per function and per module.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

from bench import processes

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def py_spy() -> str:
    """The py-spy executable next to this Python, or on PATH; raises when there is none."""
    local = Path(sys.executable).parent / "py-spy"
    found = str(local) if local.exists() else shutil.which("py-spy")
    if not found:
        raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start_recording(pid: int, seconds: float, out: Path, cpus: str) -> subprocess.Popen[bytes]:
    """Sample ``pid`` and its worker processes for ``seconds`` (py-spy itself on the load CPUs, not on
    the server's)."""
    command = [
        py_spy(), "record", "--pid", str(pid), "--subprocesses", "--duration", str(max(1, round(seconds))),
        "--rate", "200", "--nonblocking", "--format", "raw", "--output", str(out),
    ]  # fmt: skip
    return processes.start(command, cpus, out.with_suffix(".log"))


def _module(file: str) -> str:
    """A readable module name for a frame's file: the part after site-packages or src/, or the name."""
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
            break
    if file.startswith(".") and "/" in file:  # /lib/python3.11/... -> the stdlib module path
        file = file.split("/", 1)[1]
    return file.removesuffix(".py").replace("/", ".").removesuffix(".__init__") or "?"


def _name(frame: str) -> str:
    match = _FRAME.match(frame)
    function, file = (match["function"], match["file"]) if match else (frame, "?")
    return f"{_module(file)}:{function}"


def summarize(folded: Path, top: int = 15) -> str:
    """Own (leaf) time per function and module, and inclusive time of fhirbox functions, in % of samples."""
    own_function: Counter[str] = Counter()
    own_module: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in folded.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        names = [_name(frame) for frame in stack.split(";")]
        own_function[names[-1]] += count
        own_module[names[-1].split(":", 1)[0]] += count
        for name in set(names):
            inclusive[name] += count
    if not total:
        return "no samples\n"
    lines = [
        f"{total} samples (200/s, idle excluded) of all threads: the event loop and the SQLite writer",
        "thread run side by side, so a share is of all samples, not of one CPU.",
        "",
        "own time by module:",
    ]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own_module.most_common(top)]
    lines += ["", "own time by function:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in own_function.most_common(top)]
    lines += ["", "inclusive time by fhirbox function (the function and what it calls):"]
    ours = [(name, n) for name, n in inclusive.most_common() if name.startswith("fhirbox.")]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in ours[: top * 2]]
    return "\n".join(lines) + "\n"
