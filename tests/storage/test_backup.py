"""``fhirbox backup PATH``: a consistent online copy of a SQLite database, made while a real server writes."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from fhirbox.models.session import iso
from fhirbox.storage import open_store
from fhirbox.storage.base import NewResource
from fhirbox.storage.sqlite import backup_database
from tests.support import (
    ROOT,
    ServerProcess,
    one_line_error,
    postgres_base_url,
    postgres_schema_url,
    run_fhirbox,
    wait_until,
)


def test_a_backup_taken_during_writes_opens_is_intact_and_holds_every_acknowledged_write(
    tmp_path: Path,
) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    server = ServerProcess(live, tmp_path).start()
    acknowledged: list[int] = []
    stop = threading.Event()

    def write() -> None:
        with server.client(auth=ROOT) as http:
            n = 0
            while not stop.is_set():
                response = http.put(f"/Patient/w-{n}", json={"n": n, "note": "x" * 500})
                assert response.status_code == 201, response.text
                acknowledged.append(n)
                n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        wait_until(lambda: len(acknowledged) >= 200, timeout=60)
        before = set(acknowledged)  # every write acknowledged before the backup starts
        copy = tmp_path / "copy.db"
        done = run_fhirbox("backup", "--database", live, str(copy))
        assert done.returncode == 0, done.stderr
        assert "integrity_check ok" in done.stdout
        during = len(acknowledged)
        wait_until(lambda: len(acknowledged) > during + 50, timeout=60)  # the server kept writing
    finally:
        stop.set()
        writer.join(60)
        server.stop()

    with sqlite3.connect(copy) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # one self-contained file
        ids = {row[0] for row in conn.execute("SELECT id FROM resource WHERE type = 'Patient'")}
    assert {f"w-{n}" for n in before} <= ids
    assert not list(tmp_path.glob(".copy.db.partial-*"))

    # The copy is a working fhirbox database.
    restored = ServerProcess(f"sqlite:///{copy}", tmp_path).start()
    try:
        with restored.client(auth=ROOT) as http:
            last = max(before)
            assert http.get(f"/Patient/w-{last}").json()["n"] == last
    finally:
        restored.stop()


def test_backup_refuses_to_overwrite_or_to_copy_what_is_not_there(tmp_path: Path) -> None:
    server = ServerProcess(f"sqlite:///{tmp_path}/live.db", tmp_path).start()
    server.stop()
    existing = tmp_path / "existing.db"
    existing.write_bytes(b"keep me")
    done = run_fhirbox("backup", "--database", f"sqlite:///{tmp_path}/live.db", str(existing))
    one_line_error(done, 1, "exists")
    assert existing.read_bytes() == b"keep me"
    missing = run_fhirbox("backup", "--database", f"sqlite:///{tmp_path}/missing.db", str(tmp_path / "b.db"))
    one_line_error(missing, 1, "no SQLite database at")
    assert not (tmp_path / "missing.db").exists() and not (tmp_path / "b.db").exists()


def test_a_backup_into_a_missing_directory_names_the_destination_and_creates_nothing(tmp_path: Path) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    ServerProcess(live, tmp_path).start().stop()
    destination = tmp_path / "backups" / "b.db"
    done = run_fhirbox("backup", "--database", live, str(destination))
    line = one_line_error(
        done, 1, f"cannot write {destination}", f"directory {destination.parent} does not exist"
    )
    assert "live.db" not in line  # the source is not to blame
    assert not destination.parent.exists()  # never created behind the user's back


def test_a_backup_under_a_file_says_its_directory_is_not_one(tmp_path: Path) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    ServerProcess(live, tmp_path).start().stop()
    (tmp_path / "notes").write_text("a file")
    destination = tmp_path / "notes" / "b.db"
    done = run_fhirbox("backup", "--database", live, str(destination))
    one_line_error(done, 1, f"cannot write {destination}", f"{destination.parent} is not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any directory")
def test_a_backup_into_a_read_only_directory_says_it_is_not_writable(tmp_path: Path) -> None:
    live = f"sqlite:///{tmp_path}/live.db"
    ServerProcess(live, tmp_path).start().stop()
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    done = run_fhirbox("backup", "--database", live, str(locked / "b.db"))
    one_line_error(done, 1, f"cannot write {locked / 'b.db'}", f"directory {locked} is not writable")
    assert not list(locked.iterdir())


def test_backup_of_postgresql_points_to_pg_dump_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://fhirbox:Db-Pa55word@db.internal/fhirbox"
    done = run_fhirbox("backup", "--database", url, str(tmp_path / "x.dump"))
    line = one_line_error(done, 2, "pg_dump --format=custom")
    assert "Db-Pa55word" not in line
    assert not list(tmp_path.iterdir())


def test_backup_of_postgresql_with_a_search_path_suggests_pg_dump_without_it(tmp_path: Path) -> None:
    """pg_dump refuses ``?search_path=`` ("invalid URI query parameter"): the schema becomes --schema."""
    url = "postgresql://fhirbox:Db-Pa55word@db.internal/fhirbox?search_path=tenant_a&sslmode=require"
    done = run_fhirbox("backup", "--database", url, str(tmp_path / "x.dump"))
    line = one_line_error(
        done,
        2,
        "pg_dump --format=custom --schema=tenant_a",
        "'postgresql://fhirbox@db.internal/fhirbox?sslmode=require'",
    )
    assert "Db-Pa55word" not in line and "search_path" not in line and "$FHIRBOX_DATABASE_URL" not in line
    assert "PGPASSWORD" in line  # where the password it leaves out goes
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="pg_dump is not installed")
def test_the_suggested_pg_dump_dumps_the_schema_of_a_search_path_url(tmp_path: Path) -> None:
    base = postgres_base_url()
    assert base is not None
    with postgres_schema_url(base) as url:
        ServerProcess(url, tmp_path).start().stop()
        env = {"FHIRBOX_DATABASE_URL": url}
        done = run_fhirbox("backup", str(tmp_path / "fhirbox.dump"), env=env)
        command = one_line_error(done, 2, "pg_dump").split("e.g. ", 1)[1].split(" (with the password")[0]
        dumped = subprocess.run(
            ["bash", "-c", command], capture_output=True, text=True, timeout=60, env={**os.environ, **env}
        )
        assert dumped.returncode == 0, (command, dumped.stderr)
        listed = subprocess.run(
            ["pg_restore", "--list", str(tmp_path / "fhirbox.dump")],
            capture_output=True,
            text=True,
            timeout=60,
        )
    schema = url.rsplit("search_path=", 1)[1]
    assert f"TABLE DATA {schema} resource " in listed.stdout, listed.stdout


def test_a_directory_as_backup_path_is_a_usage_error(tmp_path: Path) -> None:
    """A directory as PATH is a usage error, not a traceback."""
    done = run_fhirbox("backup", "--database", f"sqlite:///{tmp_path}/live.db", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


async def test_the_backup_counts_audit_events_among_the_resources(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path}/live.db")
    await store.open()
    try:
        await store.mutate("Patient", "p1", lambda current: {"n": 1})
        recorded = iso(time.time())
        events = [NewResource("AuditEvent", f"e{n}", {"recorded": recorded}) for n in range(3)]
        await store.add(events)
    finally:
        await store.close()
    summary = backup_database(str(tmp_path / "live.db"), str(tmp_path / "copy.db"))
    assert summary.resources == 4
