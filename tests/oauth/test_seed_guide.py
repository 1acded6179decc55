"""Every request of the seed guide (client-credentials-grant.md), as written, against a real server."""

from __future__ import annotations

import base64
import subprocess

import jwt
import yaml

from tests.support import ROOT, ServerProcess

YAML = {"Accept": "text/yaml", "Content-Type": "text/yaml"}

MINIMAL_CLIENT = """\
secret: verysecret
grant_types:
  - client_credentials
"""

JWT_CLIENT = """\
secret: verysecret
grant_types:
  - client_credentials
auth:
  client_credentials:
    access_token_expiration: 600
    token_format: jwt
    refresh_token: true
"""

POLICY = """\
engine: allow
link:
  - id: api-client
    resourceType: Client
"""


def test_guide_flow_with_opaque_token(server: ServerProcess) -> None:
    with server.client() as http:
        created = http.put("/Client/api-client", content=MINIMAL_CLIENT, headers=YAML, auth=ROOT)
        assert created.status_code == 201
        client = yaml.safe_load(created.text)
        assert client["grant_types"] == ["client_credentials"] and "secret" not in client

        policy = http.put("/AccessPolicy/api-client", content=POLICY, headers=YAML, auth=ROOT)
        assert policy.status_code == 201
        assert yaml.safe_load(policy.text)["engine"] == "allow"

        # using-basic: Basic & form-url-encoded
        basic = base64.b64encode(b"api-client:verysecret").decode()
        response = http.post(
            "/auth/token",
            content="grant_type=client_credentials",
            headers={
                "Authorization": f"Basic {basic}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert response.status_code == 200
        token = response.json()
        assert token["token_type"] == "Bearer"
        assert isinstance(token["access_token"], str) and token["expires_in"] == 3600
        assert "refresh_token" not in token

        # json-request
        response = http.post(
            "/auth/token",
            content=b'{\n  "grant_type": "client_credentials",\n  "client_id": "api-client",\n'
            b'  "client_secret": "verysecret"\n}',
            headers={"Content-Type": "application/json"},
        )
        assert response.status_code == 200
        access_token = response.json()["access_token"]

        # authorized-request: the token authenticates and the guide's policy allows it.
        patients = http.get("/Patient", headers={"Authorization": f"Bearer {access_token}"})
        assert patients.status_code == 200
        assert patients.json()["resourceType"] == "Bundle"

        # close-session
        closed = http.request("DELETE", "/Session", headers={"Authorization": f"Bearer {access_token}"})
        assert closed.status_code == 200
        session = closed.json()
        assert session["resourceType"] == "Session" and session["active"] is False and "end" in session
        assert "access_token" not in session
        after = http.get("/Patient", headers={"Authorization": f"Bearer {access_token}"})
        assert after.status_code == 401

        # Session is just a Resource: GET /Session
        sessions = http.get("/Session", auth=ROOT).json()
        assert sessions["total"] == 2
        assert {e["resource"]["client"]["id"] for e in sessions["entry"]} == {"api-client"}
        for entry in sessions["entry"]:
            assert "access_token" not in entry["resource"]


def test_guide_flow_with_jwt_refresh_token_and_audience(server: ServerProcess) -> None:
    with server.client() as http:
        assert http.put("/Client/api-client", content=JWT_CLIENT, headers=YAML, auth=ROOT).status_code == 201
        response = http.post(
            "/auth/token",
            json={
                "grant_type": "client_credentials",
                "client_id": "api-client",
                "client_secret": "verysecret",
                "audience": "http://resource.server.com",
            },
        )
        assert response.status_code == 200
        token = response.json()
        assert set(token) == {"token_type", "expires_in", "access_token", "refresh_token"}
        assert token["token_type"] == "Bearer" and token["expires_in"] == 600
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        assert claims["aud"] == "http://resource.server.com"
        assert claims["iss"] == server.url and claims["sub"] == "api-client"
        assert claims["exp"] - claims["iat"] == 600
        refresh = jwt.decode(token["refresh_token"], options={"verify_signature": False})
        assert refresh["typ"] == "refresh" and refresh["jti"] == claims["jti"]
        assert refresh["sid"] == claims["sid"]

        session = http.get(f"/Session/{claims['sid']}", auth=ROOT).json()
        assert session["audience"] == "http://resource.server.com"
        assert session["type"] == "client_credentials"
        assert session["client"] == {"id": "api-client", "resourceType": "Client"}

        # a valid token, but no policy links this client yet: authenticated and forbidden
        patients = http.get("/Patient", headers={"Authorization": f"Bearer {token['access_token']}"})
        assert patients.status_code == 403
        assert patients.json()["id"] == "forbidden"


def test_guide_curl_command_works(server: ServerProcess) -> None:
    with server.client() as http:
        http.put("/Client/api-client", content=MINIMAL_CLIENT, headers=YAML, auth=ROOT)
        http.put("/AccessPolicy/api-client", content=POLICY, headers=YAML, auth=ROOT)
        token = http.post(
            "/auth/token", auth=("api-client", "verysecret"), data={"grant_type": "client_credentials"}
        ).json()["access_token"]
    result = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
         "-H", f"Authorization: Bearer {token}", f"{server.url}/Patient"],
        capture_output=True, text=True, check=True, timeout=30,
    )  # fmt: skip
    assert result.stdout in ("200", "403")
