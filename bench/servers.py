"""The servers under test: fhirbox on a fresh database, and the peer; each pinned to the server CPU."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from bench import processes
from bench.scenarios import ROOT_ID, ROOT_SECRET

POSTGRES_ENV = "FHIRBOX_BENCH_POSTGRES_URL"


@dataclass
class Server:
    """A started server: its process (stop it with ``processes.stop``), base URL and log file."""

    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"server {self.url} died ({self.proc.returncode}):\n{processes.tail(self.log)}"
            )


@contextmanager
def fresh_database(backend: str, workdir: Path) -> Iterator[str]:
    """A fresh, empty database URL: a new SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if backend == "sqlite":
        yield f"sqlite:///{workdir / f'fhirbox-{uuid.uuid4().hex[:8]}.db'}"
        return
    base = os.environ[POSTGRES_ENV]
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(base, f"CREATE SCHEMA {schema}"))
    separator = "&" if "?" in base else "?"
    try:
        yield f"{base}{separator}search_path={schema}"
    finally:
        asyncio.run(_pg_execute(base, f"DROP SCHEMA {schema} CASCADE"))


async def _pg_execute(url: str, sql: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def start_fhirbox(
    database_url: str,
    variant: str,
    cpus: str,
    workdir: Path,
    workers: int = 1,
    settings: dict[str, str] | None = None,
    source: Path | None = None,
) -> Server:
    """``fhirbox serve`` with ``workers`` processes on a free loopback port, signing with the algorithm
    ``variant`` starts with; `` audit=off`` after it sets ``FHIRBOX_AUDIT=off``; ``settings``
    (``FHIRBOX_*`` variables) are added to its environment. ``source``: the ``src`` directory of
    another checkout to run instead of this one (``--baseline``), with this Python and its packages."""
    alg, *options = variant.split()
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"fhirbox-{port}.log"
    env = {
        **os.environ,
        "FHIRBOX_ROOT_CLIENT_ID": ROOT_ID,
        "FHIRBOX_ROOT_CLIENT_SECRET": ROOT_SECRET,
        "FHIRBOX_SIGNING_ALG": alg,
        "FHIRBOX_LOG_LEVEL": "warning",
        "FHIRBOX_AUDIT": "off" if "audit=off" in options else "all",
        **(settings or {}),
    }
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    command = [
        sys.executable, "-m", "fhirbox.cli", "serve",
        "--host", "127.0.0.1", "--port", str(port), "--database", database_url,
        "--workers", str(workers),
    ]  # fmt: skip
    proc = processes.start(command, cpus, log, env=env, cwd=workdir)
    return _healthy(proc, url, "/health", log)


@contextmanager
def checkout(revision: str, workdir: Path) -> Iterator[Path]:
    """The ``src`` directory of ``revision`` of this repository, checked out in a temporary worktree."""
    repo = Path(__file__).resolve().parent.parent
    tree = workdir / "baseline"
    added = subprocess.run(
        ["git", "-C", str(repo), "worktree", "add", "--detach", "--", str(tree), revision],
        capture_output=True,
        text=True,
    )
    if added.returncode != 0:
        raise SystemExit(f"bench: --baseline {revision}: {added.stderr.strip() or 'git worktree add failed'}")
    try:
        yield tree / "src"
    finally:
        subprocess.run(
            ["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], capture_output=True
        )


def start_peer(script: Path, cpus: str, workdir: Path, api_alg: str) -> Server:
    """node-oidc-provider (bench/peer/server.mjs) on a free loopback port; ``api_alg`` signs the JWTs
    of the resource ``https://api.example.com/``."""
    port = processes.free_port()
    url = f"http://127.0.0.1:{port}"
    log = workdir / f"peer-{port}.log"
    env = {**os.environ, "PEER_PORT": str(port), "PEER_API_ALG": api_alg, "NODE_ENV": "production"}
    proc = processes.start(["node", str(script)], cpus, log, env=env, cwd=script.parent)
    return _healthy(proc, url, "/.well-known/openid-configuration", log)


def _healthy(proc: subprocess.Popen[bytes], url: str, health_path: str, log: Path) -> Server:
    """The started server once ``health_path`` answers; stopped again if it never does."""
    try:
        processes.wait_healthy(proc, f"{url}{health_path}", log)
    except BaseException:
        processes.stop(proc)
        raise
    return Server(proc, url, log)
