"""The ``fhirbox`` command never shows a traceback: every mistake is one line on stderr and an exit status,
through real subprocesses (``python -m fhirbox``, as an operator would run it)."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from fhirbox.settings import SETTINGS
from tests.support import (
    ROOT_SECRET,
    ServerProcess,
    _pg_execute,
    one_line_error,
    postgres_base_url,
    run_fhirbox,
)

DB_PASSWORD = "Db-Pa55word-never-shown"


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--port", "70000"], {}, ["--port", "'70000'", "TCP port (0-65535)"]),
        (["--port", "-1"], {}, ["--port", "'-1'", "TCP port (0-65535)"]),
        (["--port", "http"], {}, ["--port", "'http'", "TCP port (0-65535)"]),
        (["--workers", "0"], {}, ["--workers", "'0'", "positive integer"]),
        (
            [],
            {"FHIRBOX_LOG_LEVEL": "verbose"},
            ["FHIRBOX_LOG_LEVEL", "'verbose'", "debug, info, warning or error"],
        ),
        ([], {"FHIRBOX_PORT": "8o80"}, ["FHIRBOX_PORT", "'8o80'", "TCP port"]),
        ([], {"FHIRBOX_BODY_TIMEOUT": "nan"}, ["FHIRBOX_BODY_TIMEOUT", "'nan'", "positive number"]),
        (["--database", "mysql://x"], {}, ["--database", "'mysql://x'", "sqlite:///", "postgresql://"]),
        (["--database", "/plain/path"], {}, ["--database", "'/plain/path'", "sqlite:///"]),
        (["--database", "sqlite:/x.db"], {}, ["--database", "'sqlite:/x.db'", "sqlite:///relative/path.db"]),
        (["--database", "sqlite://x.db"], {}, ["--database", "'sqlite://x.db'"]),
        ([], {"FHIRBOX_DATABASE_URL": "sqlite:/x.db"}, ["FHIRBOX_DATABASE_URL", "'sqlite:/x.db'"]),
        (
            [],
            {"FHIRBOX_KEY_ENCRYPTION_KEY": "c2hvcnQ="},
            ["FHIRBOX_KEY_ENCRYPTION_KEY", "32 bytes", "5 bytes"],
        ),
        (["--no-such-flag"], {}, ["--no-such-flag"]),
    ],
)
def test_a_bad_flag_or_variable_is_one_line_and_exit_2_before_anything_listens(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: list[str]
) -> None:
    done = run_fhirbox("serve", *args, env=env, cwd=tmp_path)
    one_line_error(done, 2, *expected)
    assert list(tmp_path.iterdir()) == []  # sqlite:/x.db used to create ./x.db with a new root secret


def test_a_bad_database_url_never_shows_its_password(tmp_path: Path) -> None:
    done = run_fhirbox("serve", "--database", f"mysql://u:{DB_PASSWORD}@h/db", cwd=tmp_path)
    line = one_line_error(done, 2, "--database", "mysql://u:***@h/db")
    assert DB_PASSWORD not in line


def test_a_secret_variable_with_a_bad_value_is_not_echoed(tmp_path: Path) -> None:
    done = run_fhirbox(
        "settings", env={"FHIRBOX_KEY_ENCRYPTION_KEY": "not-32-bytes-but-secret"}, cwd=tmp_path
    )
    assert "not-32-bytes-but-secret" not in one_line_error(done, 2, "FHIRBOX_KEY_ENCRYPTION_KEY")


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "list"],
        ["keys", "rotate"],
        ["keys", "encrypt"],
        ["policy", "check", "--client", "c", "GET", "/Patient"],
    ],
)
def test_keys_and_policy_never_create_a_sqlite_database(tmp_path: Path, command: list[str]) -> None:
    key = {"FHIRBOX_KEY_ENCRYPTION_KEY": "A" * 43 + "="}
    done = run_fhirbox(*command, env=key, cwd=tmp_path)
    one_line_error(done, 1, "no SQLite database at var/fhirbox.db")
    elsewhere = tmp_path / "elsewhere.db"
    done = run_fhirbox(*command, "--database", f"sqlite:///{elsewhere}", env=key, cwd=tmp_path)
    one_line_error(done, 1, f"no SQLite database at {elsewhere}")
    assert list(tmp_path.iterdir()) == []


def test_keys_list_refuses_a_sqlite_file_without_fhirbox_tables(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    done = run_fhirbox("keys", "list", "--database", f"sqlite:///{other}")
    one_line_error(done, 1, "holds no fhirbox tables")
    tables = sqlite3.connect(other).execute("SELECT name FROM sqlite_master").fetchall()
    assert tables == [("t",)]


@pytest.mark.parametrize(
    "command", [["keys", "list"], ["policy", "check", "--client", "c", "GET", "/Patient"]]
)
def test_keys_and_policy_never_create_a_postgresql_database_or_tables(command: list[str]) -> None:
    base = postgres_base_url()
    assert base is not None
    server = base.split("?", 1)[0].rsplit("/", 1)[0]
    missing = f"fhirbox_missing_{uuid.uuid4().hex[:8]}"
    one_line_error(
        run_fhirbox(*command, "--database", f"{server}/{missing}"), 1, f'database "{missing}" does not exist'
    )
    schema = f"t_{uuid.uuid4().hex[:12]}"
    asyncio.run(_pg_execute(base, f"CREATE SCHEMA {schema}"))
    try:
        empty = f"{base}{'&' if '?' in base else '?'}search_path={schema}"
        one_line_error(run_fhirbox(*command, "--database", empty), 1, "holds no fhirbox tables", schema)
        tables = asyncio.run(_tables(base, schema))
        assert tables == []
    finally:
        asyncio.run(_pg_execute(base, f"DROP SCHEMA {schema} CASCADE"))


async def _tables(url: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = $1", schema)
        return [row["tablename"] for row in rows]
    finally:
        await conn.close()


@pytest.mark.parametrize(
    "command",
    [
        ["keys", "list"],
        ["keys", "rotate"],
        ["policy", "check", "--client", "c", "GET", "/"],
        ["serve", "--port", "0"],
    ],
)
def test_an_unreachable_postgresql_server_is_one_line_without_its_password(command: list[str]) -> None:
    url = f"postgresql://fhirbox:{DB_PASSWORD}@127.0.0.1:1/fhirbox"  # nothing listens on port 1
    done = run_fhirbox(*command, "--database", url)
    line = one_line_error(done, 1, "cannot", "postgresql://fhirbox:***@127.0.0.1:1/fhirbox")
    assert DB_PASSWORD not in line


def test_a_busy_port_is_one_line_and_no_listening(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_fhirbox("serve", "--port", str(port), "--database", f"sqlite:///{tmp_path}/db.sqlite")
    one_line_error(done, 1, f"cannot listen on 127.0.0.1:{port}", "in use")
    assert not (tmp_path / "db.sqlite").exists()  # refused before the database was touched


def test_listening_is_printed_once_the_port_is_bound(server: ServerProcess) -> None:
    line = next(line for line in server.output().splitlines() if "listening on" in line)
    assert f"fhirbox listening on http://127.0.0.1:{server.port} (database " in line
    with socket.socket() as other, pytest.raises(OSError):
        other.bind(("127.0.0.1", server.port))


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["keys", "list"]])
def test_a_database_migrated_by_a_newer_fhirbox_is_refused_naming_both_versions(
    database_url: str, server_factory: Callable[..., ServerProcess], command: list[str]
) -> None:
    from fhirbox.storage import migrations

    server_factory().stop()  # the database as this fhirbox makes it
    steps = migrations.SQLITE if database_url.startswith("sqlite") else migrations.POSTGRES
    known = max(version for version, _ in steps)
    asyncio.run(_record_version(database_url, known + 5))
    done = run_fhirbox(*command, "--database", database_url, env={"FHIRBOX_ROOT_CLIENT_SECRET": ROOT_SECRET})
    one_line_error(done, 1, f"schema is version {known + 5}", f"the version {known} this fhirbox knows")


async def _record_version(database_url: str, version: int) -> None:
    if database_url.startswith("sqlite"):
        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute("INSERT INTO schema_migrations VALUES (?, 'later')", (version,))
        return
    conn = await asyncpg.connect(database_url)  # its search_path names the test's schema
    try:
        await conn.execute("INSERT INTO schema_migrations VALUES ($1, 'later')", version)
    finally:
        await conn.close()


def test_version_and_python_dash_m_work_like_the_command() -> None:
    done = run_fhirbox("--version")
    assert done.returncode == 0 and done.stdout.startswith("fhirbox ")
    installed = subprocess.run(
        [str(Path(sys.executable).parent / "fhirbox"), "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert installed.stdout == done.stdout
    assert "Usage: fhirbox" in run_fhirbox("--help").stdout


def test_settings_shows_effective_values_beside_defaults_and_hides_secrets() -> None:
    env = {
        "FHIRBOX_PORT": "9090",
        "FHIRBOX_ROOT_CLIENT_SECRET": "root-secret-never-shown",
        "FHIRBOX_KEY_ENCRYPTION_KEY": "QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFBQUE=",
        "FHIRBOX_DATABASE_URL": f"postgresql://fhirbox:{DB_PASSWORD}@db.internal/fhirbox",
    }
    done = run_fhirbox("settings", env=env)
    assert done.returncode == 0, done.stderr
    rows = {line.split(" | ")[0].strip("| `"): line for line in done.stdout.splitlines()}
    assert rows["FHIRBOX_PORT"] == "| `FHIRBOX_PORT` | `9090` | `8080` |"
    assert rows["FHIRBOX_ROOT_CLIENT_SECRET"] == "| `FHIRBOX_ROOT_CLIENT_SECRET` | `***` | (unset) |"
    assert rows["FHIRBOX_KEY_ENCRYPTION_KEY"] == "| `FHIRBOX_KEY_ENCRYPTION_KEY` | `***` | (unset) |"
    assert "`postgresql://fhirbox:***@db.internal/fhirbox`" in rows["FHIRBOX_DATABASE_URL"]
    for secret in ("root-secret-never-shown", "QUFBQUFB", DB_PASSWORD):
        assert secret not in done.stdout
    assert all(setting.env in rows for setting in SETTINGS)
    defaults = run_fhirbox("settings", "--defaults", env=env).stdout
    assert "| Variable | Default | Meaning |" in defaults and "9090" not in defaults


@pytest.mark.parametrize("command", [["keys", "list"], ["serve", "--port", "0"]])
def test_an_unusable_sqlite_file_is_one_line(tmp_path: Path, command: list[str]) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not a database" * 100)
    for url, expected in [
        (f"sqlite:///{garbage}", "file is not a database"),
        (f"sqlite:///{tmp_path}/{'a' * 300}/x.db", "File name too long"),
    ]:
        one_line_error(run_fhirbox(*command, "--database", url, cwd=tmp_path), 1, "cannot", expected)
    assert garbage.read_bytes() == b"not a database" * 100


def test_an_unforeseen_error_is_still_one_line_without_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from fhirbox import cli

    def broken() -> str:
        raise RuntimeError(f"lost postgresql://fhirbox:{DB_PASSWORD}@db/fhirbox\nsecond line")

    monkeypatch.setattr(cli, "settings_table", broken)
    result = CliRunner().invoke(cli.main, ["settings", "--defaults"], env={"FHIRBOX_LOG_LEVEL": "info"})
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "fhirbox: unexpected error: RuntimeError: lost postgresql://fhirbox:***@db/fhirbox second line "
        "(FHIRBOX_LOG_LEVEL=debug shows where)"
    ]
