"""The seed guide end to end on a real server: a client_credentials client, its allow policy, and
a bearer token that reaches /Patient only for that client."""

from __future__ import annotations

import httpx

from tests.policy.conftest import FORBIDDEN
from tests.support import ROOT, ServerProcess


def token_for(http: httpx.Client, client_id: str, secret: str) -> str:
    response = http.post(
        "/auth/token",
        json={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "Bearer"
    return str(body["access_token"])


def test_seed_guide_policy_grants_the_api_client_bearer_token(server: ServerProcess) -> None:
    yaml = {"Content-Type": "text/yaml", "Accept": "text/yaml"}
    with server.client(auth=ROOT) as admin:
        client = "secret: verysecret\ngrant_types:\n  - client_credentials\n"
        assert admin.put("/Client/api-client", content=client, headers=yaml).status_code in (200, 201)
        other = "secret: othersecret\ngrant_types:\n  - client_credentials\n"
        assert admin.put("/Client/other-client", content=other, headers=yaml).status_code in (200, 201)
        policy = "engine: allow\nlink:\n  - id: api-client\n    resourceType: Client\n"
        assert admin.put("/AccessPolicy/api-client", content=policy, headers=yaml).status_code in (200, 201)

    with server.client() as http:
        api_token = token_for(http, "api-client", "verysecret")
        other_token = token_for(http, "other-client", "othersecret")
        allowed = http.get("/Patient", headers={"Authorization": f"Bearer {api_token}"})
        assert allowed.status_code == 200, allowed.text
        assert allowed.json()["resourceType"] == "Bundle"
        denied = http.get("/Patient", headers={"Authorization": f"Bearer {other_token}"})
        assert denied.status_code == 403
        assert denied.json() == FORBIDDEN
        assert http.get("/Patient", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
