"""``fhirbox policy check``: allowed or denied from the command line, and by which policy."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx

from tests.policy.conftest import ClientMaker
from tests.support import REPO


def policy_check(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "FHIRBOX_DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "fhirbox.cli", "policy", "check", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_policy_check_names_the_allowing_policy(
    database_url: str, root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    await api_client("reader")
    policy = {
        "engine": "matcho",
        "link": [{"reference": "Client/reader"}],
        "matcho": {"request-method": "get", "params": {"resource/type": "Patient"}},
    }
    await root.put("/AccessPolicy/patient-reader", json=policy)
    allowed = policy_check(database_url, "--client", "reader", "GET", "/Patient/pt-1?_format=json")
    assert allowed.returncode == 0, allowed.stderr
    assert "allowed by AccessPolicy/patient-reader" in allowed.stdout
    denied = policy_check(database_url, "--client", "reader", "DELETE", "/Patient/pt-1")
    assert denied.returncode == 1, denied.stderr
    assert "denied" in denied.stdout
    assert "AccessPolicy/patient-reader" in denied.stdout


async def test_policy_check_judges_a_given_body(
    database_url: str, root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    await api_client("writer")
    policy = {
        "engine": "matcho",
        "link": [{"reference": "Client/writer"}],
        "matcho": {"resource": {"active": True}},
    }
    await root.put("/AccessPolicy/writer", json=policy)
    args = ["--client", "writer", "PUT", "/Patient/a", "--body"]
    assert policy_check(database_url, *args, '{"active": true}').returncode == 0
    assert policy_check(database_url, *args, '{"active": false}').returncode == 1


async def test_policy_check_refuses_unknown_clients_and_routes(
    database_url: str, root: httpx.AsyncClient
) -> None:
    unknown = policy_check(database_url, "--client", "nobody", "GET", "/Patient")
    assert unknown.returncode == 2
    assert "No Client/nobody" in unknown.stderr
    no_route = policy_check(database_url, "--client", "root", "GET", "/")
    assert no_route.returncode == 2
    assert "No route for GET /" in no_route.stderr
    assert policy_check(database_url, "--client", "root", "GET", "/Patient").returncode == 0
