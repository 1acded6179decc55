"""The two outside tools: wrk (Debian package) and node-oidc-provider (npm), installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

PEER_DIR = Path(__file__).resolve().parent / "peer"


def _run(command: list[str], what: str) -> None:
    try:
        subprocess.run(command, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise RuntimeError(f"{what} failed: {exc}") from exc


def ensure_wrk() -> str:
    """The path of ``wrk``; installs the Debian package with apt-get first when it is missing."""
    found = shutil.which("wrk")
    if found:
        return found
    print("bench: wrk is missing; installing the Debian package 'wrk' with apt-get", flush=True)
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env_prefix = ["env", "DEBIAN_FRONTEND=noninteractive"]
    _run([*sudo, *env_prefix, "apt-get", "install", "-y", "-q", "wrk"], "apt-get install wrk")
    found = shutil.which("wrk")
    if not found:
        # The package index may be stale on a fresh machine.
        _run([*sudo, *env_prefix, "apt-get", "update", "-q"], "apt-get update")
        _run([*sudo, *env_prefix, "apt-get", "install", "-y", "-q", "wrk"], "apt-get install wrk")
        found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk is still not on PATH after apt-get install wrk")
    return found


def ensure_peer() -> Path:
    """The peer's server script; installs oidc-provider 9.x with npm into bench/peer/ when missing."""
    if not (PEER_DIR / "node_modules" / "oidc-provider" / "package.json").exists():
        if shutil.which("npm") is None or shutil.which("node") is None:
            raise RuntimeError(
                "the peer needs Node.js and npm (node-oidc-provider); install them or use --no-peer"
            )
        print(
            "bench: installing the peer (npm package oidc-provider@9) into bench/peer/node_modules",
            flush=True,
        )
        _run(["sh", str(PEER_DIR / "setup.sh")], "npm install oidc-provider")
    return PEER_DIR / "server.mjs"
