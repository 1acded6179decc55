"""Nothing secret is printed: a real server's whole output, at debug level, after a session that used a
database password, client secrets, Basic and Bearer headers, access and refresh tokens."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.oauth.support import SECRET, client_body
from tests.support import REPO, ROOT, ROOT_SECRET, ServerProcess

DB_PASSWORD = "Db-Pa55word-never-shown"


def with_password(database_url: str) -> str:
    """The PostgreSQL URL with a password (the test server trusts local connections and ignores it)."""
    return database_url.replace("postgresql://postgres@", f"postgresql://postgres:{DB_PASSWORD}@", 1)


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://fhirbox:{DB_PASSWORD}@127.0.0.1:1/fhirbox",  # nothing listens
        f"postgresq://fhirbox:{DB_PASSWORD}@127.0.0.1/fhirbox",  # a mistyped scheme
        f"postgresql://fhirbox@127.0.0.1:1/fhirbox?password={DB_PASSWORD}",
    ],
)
def test_a_database_password_is_not_printed_when_the_server_cannot_start(url: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fhirbox.cli", "serve", "--port", "0", "--database", url],
        capture_output=True, text=True, cwd=REPO, timeout=60,
    )  # fmt: skip
    if url.startswith("postgresq:"):  # not a database URL at all: a usage error (exit 2)
        assert done.returncode == 2 and "--database: must be" in done.stderr
    else:
        assert done.returncode == 1 and "cannot start" in done.stderr
    assert DB_PASSWORD not in done.stdout + done.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_no_secret_token_or_authorization_header_in_a_servers_output(
    server_factory: Callable[..., ServerProcess], database_url: str, log_format: str
) -> None:
    url = with_password(database_url)
    server = server_factory(env={"FHIRBOX_LOG_LEVEL": "debug", "FHIRBOX_LOG_FORMAT": log_format}, url=url)
    seen: list[str] = [SECRET, ROOT_SECRET]
    with server.client(auth=ROOT) as admin, server.client() as anyone:
        body = client_body(token_format="jwt", refresh_token=True)
        assert admin.put("/Client/api-client", json=body).status_code == 201
        grant = {"grant_type": "client_credentials"}
        token = anyone.post("/auth/token", data=grant, auth=("api-client", SECRET)).json()
        seen += [token["access_token"], token["refresh_token"]]
        assert anyone.get(
            "/Patient", headers={"Authorization": f"Bearer {token['access_token']}"}
        ).status_code
        refresh = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
        refreshed = anyone.post("/auth/token", data=refresh, auth=("api-client", SECRET)).json()
        seen += [refreshed["access_token"], refreshed["refresh_token"]]
        revoke = {"token": refreshed["access_token"]}
        assert anyone.post("/auth/revoke", data=revoke, auth=("api-client", SECRET)).status_code == 200
        anyone.post("/auth/token", data=grant, auth=("api-client", "a-wrong-guess"))
        # Credentials in query strings (which the server does not read) stay out of the access log.
        for name in ("access_token", "token", "refresh_token"):
            anyone.get(f"/Patient?{name}={refreshed['refresh_token']}&{name}={token['access_token']}")
        anyone.get(f"/auth/token?client_secret={SECRET}&client_assertion={token['access_token']}")
        anyone.get(f"/no/route?ACCESS_TOKEN={token['access_token']};token={SECRET}")
    server.stop()
    output = server.log_path.read_text(errors="replace")
    assert "listening on" in output
    assert output.count("logger=fhirbox.access" if log_format == "text" else '"fhirbox.access"') >= 12
    if DB_PASSWORD in url:
        seen.append(DB_PASSWORD)
        assert "postgres:***@" in output
    for secret in [*seen, "a-wrong-guess"]:
        assert secret not in output
    assert "authorization" not in output.lower()
