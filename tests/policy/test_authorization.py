"""Policies deciding live API requests: default deny, links, global policies, 401 vs 403, freshness."""

from __future__ import annotations

import httpx

from fhirbox.app import App
from tests.policy.conftest import FORBIDDEN, ClientMaker
from tests.support import basic

SEED_POLICY_YAML = """\
engine: allow
link:
  - id: api-client
    resourceType: Client
"""


async def test_client_without_policy_gets_aidbox_forbidden_outcome(api_client: ClientMaker) -> None:
    reader = await api_client("reader")
    response = await reader.get("/Patient")
    assert response.status_code == 403
    assert response.json() == FORBIDDEN


async def test_unauthenticated_request_is_401_not_403(
    client: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    await api_client("reader")
    assert (await client.get("/Patient")).status_code == 401
    wrong = await client.get("/Patient", headers=basic("reader", "wrong-secret"))
    assert wrong.status_code == 401
    assert (await client.get("/Patient", headers=basic("reader", "reader-secret"))).status_code == 403


async def test_seed_guide_allow_policy_grants_exactly_its_client(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    api = await api_client("api-client")
    other = await api_client("other-client")
    created = await root.put(
        "/AccessPolicy/api-client",
        content=SEED_POLICY_YAML,
        headers={"Content-Type": "text/yaml", "Accept": "text/yaml"},
    )
    assert created.status_code == 201, created.text
    assert (await api.get("/Patient")).status_code == 200
    assert (await api.put("/Patient/p1", json={"active": True})).status_code == 201
    assert (await other.get("/Patient")).status_code == 403


async def test_reference_link_form_grants_its_client(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    linked = await api_client("linked")
    other = await api_client("other")
    policy = {"engine": "allow", "link": [{"reference": "Client/linked"}]}
    assert (await root.put("/AccessPolicy/by-reference", json=policy)).status_code == 201
    assert (await linked.get("/Patient")).status_code == 200
    assert (await other.get("/Patient")).status_code == 403


async def test_link_to_another_resource_type_grants_no_client(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    reader = await api_client("reader")
    policy = {"engine": "allow", "link": [{"resourceType": "User", "id": "reader"}]}
    assert (await root.put("/AccessPolicy/for-a-user", json=policy)).status_code == 201
    assert (await reader.get("/Patient")).status_code == 403


async def test_global_policy_applies_to_every_client(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    first = await api_client("first")
    second = await api_client("second")
    policy = {"engine": "matcho", "matcho": {"request-method": "get", "uri": "/Patient"}}
    assert (await root.put("/AccessPolicy/everyone-searches-patients", json=policy)).status_code == 201
    assert (await first.get("/Patient")).status_code == 200
    assert (await second.get("/Patient")).status_code == 200
    assert (await second.get("/Observation")).status_code == 403


async def test_root_needs_no_policy(root: httpx.AsyncClient) -> None:
    assert (await root.get("/Patient")).status_code == 200


async def test_matcho_policy_lets_a_client_only_read_patients(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    reader = await api_client("patient-reader")
    await root.put("/Patient/pt-1", json={"active": True})
    policy = {
        "engine": "matcho",
        "link": [{"resourceType": "Client", "id": "patient-reader"}],
        "matcho": {"request-method": "get", "params": {"resource/type": "Patient"}},
    }
    assert (await root.put("/AccessPolicy/patient-reader", json=policy)).status_code == 201
    assert (await reader.get("/Patient")).status_code == 200
    assert (await reader.get("/Patient/pt-1")).status_code == 200
    assert (await reader.get("/Patient/pt-1/_history")).status_code == 200
    assert (await reader.put("/Patient/pt-1", json={"active": False})).status_code == 403
    assert (await reader.delete("/Patient/pt-1")).status_code == 403
    assert (await reader.get("/Observation")).status_code == 403
    assert (await reader.get("/AccessPolicy")).status_code == 403


async def test_policy_can_judge_the_resource_being_written(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    writer = await api_client("writer")
    policy = {
        "engine": "matcho",
        "link": [{"resourceType": "Client", "id": "writer"}],
        "matcho": {"request-method": "put", "resource": {"resourceType": "Patient", "active": True}},
    }
    assert (await root.put("/AccessPolicy/writer", json=policy)).status_code == 201
    assert (
        await writer.put("/Patient/a", json={"resourceType": "Patient", "active": True})
    ).status_code == 201
    assert (
        await writer.put("/Patient/b", json={"resourceType": "Patient", "active": False})
    ).status_code == 403
    unparsable = await writer.put(
        "/Patient/c", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert unparsable.status_code == 403


async def test_json_schema_policy_decides_live_requests(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    org_reader = await api_client("org-reader")
    policy = {
        "engine": "json-schema",
        "link": [{"resourceType": "Client", "id": "org-reader"}],
        "schema": {
            "required": ["params", "request-method"],
            "properties": {
                "request-method": {"const": "get"},
                "params": {
                    "required": ["resource/type"],
                    "properties": {"resource/type": {"const": "Organization"}},
                },
            },
        },
    }
    assert (await root.put("/AccessPolicy/org-reader", json=policy)).status_code == 201
    assert (await org_reader.get("/Organization")).status_code == 200
    assert (await org_reader.get("/Patient")).status_code == 403


async def test_complex_policy_decides_live_requests(root: httpx.AsyncClient, api_client: ClientMaker) -> None:
    clerk = await api_client("clerk")
    policy = {
        "engine": "complex",
        "link": [{"resourceType": "Client", "id": "clerk"}],
        "and": [
            {"engine": "matcho", "matcho": {"request-method": {"$enum": ["get", "post"]}}},
            {
                "engine": "complex",
                "or": [
                    {"engine": "matcho", "matcho": {"params": {"resource/type": "Patient"}}},
                    {"engine": "matcho", "matcho": {"params": {"resource/type": "Encounter"}}},
                ],
            },
        ],
    }
    assert (await root.put("/AccessPolicy/clerk", json=policy)).status_code == 201
    assert (await clerk.get("/Encounter")).status_code == 200
    assert (await clerk.post("/Patient", json={"resourceType": "Patient"})).status_code == 201
    assert (await clerk.delete("/Patient/x")).status_code == 403
    assert (await clerk.get("/Observation")).status_code == 403


async def test_policy_sees_client_without_secret_and_headers_without_authorization(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    tagged = await api_client("tagged", details={"team": "lab"})
    policy = {
        "engine": "matcho",
        "matcho": {
            "client": {"id": "tagged", "details": {"team": "lab"}, "secret": "nil?"},
            "headers": {"authorization": "nil?", "x-team": ".client.details.team"},
        },
    }
    assert (await root.put("/AccessPolicy/team-header", json=policy)).status_code == 201
    assert (await tagged.get("/Patient", headers={"X-Team": "lab"})).status_code == 200
    assert (await tagged.get("/Patient", headers={"X-Team": "radiology"})).status_code == 403


async def test_edited_policy_governs_the_next_request(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    reader = await api_client("reader")
    link = [{"resourceType": "Client", "id": "reader"}]
    patients = {"engine": "matcho", "link": link, "matcho": {"params": {"resource/type": "Patient"}}}
    assert (await root.put("/AccessPolicy/reader", json=patients)).status_code == 201
    assert (await reader.get("/Patient")).status_code == 200
    observations = {**patients, "matcho": {"params": {"resource/type": "Observation"}}}
    assert (await root.put("/AccessPolicy/reader", json=observations)).status_code == 200
    assert (await reader.get("/Patient")).status_code == 403
    assert (await reader.get("/Observation")).status_code == 200


async def test_deleted_policy_stops_granting_at_once(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    reader = await api_client("reader")
    policy = {"engine": "allow", "link": [{"resourceType": "Client", "id": "reader"}]}
    assert (await root.put("/AccessPolicy/reader", json=policy)).status_code == 201
    assert (await reader.get("/Patient")).status_code == 200
    assert (await root.delete("/AccessPolicy/reader")).status_code == 200
    assert (await reader.get("/Patient")).status_code == 403


async def test_relinking_a_policy_moves_the_grant(root: httpx.AsyncClient, api_client: ClientMaker) -> None:
    first = await api_client("first")
    second = await api_client("second")
    policy = {"engine": "allow", "link": [{"resourceType": "Client", "id": "first"}]}
    await root.put("/AccessPolicy/shared", json=policy)
    assert (await first.get("/Patient")).status_code == 200
    patched = await root.patch(
        "/AccessPolicy/shared",
        json={"link": [{"reference": "Client/second"}]},
        headers={"Content-Type": "application/merge-patch+json"},
    )
    assert patched.status_code == 200, patched.text
    assert (await first.get("/Patient")).status_code == 403
    assert (await second.get("/Patient")).status_code == 200


async def test_invalid_stored_policy_denies_instead_of_failing(app: App, api_client: ClientMaker) -> None:
    reader = await api_client("reader")

    # Stored past the REST API's write checks, as an older version or a direct database edit could.
    def broken(current: object) -> dict[str, object]:
        return {"engine": "matcho", "matcho": {"uri": "#[oops"}}

    await app.store.mutate("AccessPolicy", "broken", broken)
    response = await reader.get("/Patient")
    assert response.status_code == 403
    assert response.json() == FORBIDDEN


async def test_route_parameters_cannot_come_from_the_query_string(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    """A policy for one Patient id must not let its client create Patients by naming the id in the query."""
    writer = await api_client("pt-1-writer")
    link = [{"reference": "Client/pt-1-writer"}]
    policy = {
        "engine": "matcho",
        "link": link,
        "matcho": {"params": {"resource/type": "Patient", "resource/id": "pt-1"}},
    }
    assert (await root.put("/AccessPolicy/pt-1-only", json=policy)).status_code == 201
    assert (await writer.put("/Patient/pt-1", json={})).status_code == 201
    assert (await writer.put("/Patient/pt-2", json={})).status_code == 403
    for query in ("resource/id=pt-1", "resource%2Fid=pt-1", "%72esource/id=pt-1", "resource/type=Patient"):
        response = await writer.post(f"/Patient?{query}", json={})
        assert response.status_code == 400, (query, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
        assert "resource/" in response.json()["issue"][0]["diagnostics"]
    assert (await root.get("/Patient?vid=1")).status_code == 400
    assert (await root.get("/Patient")).json()["total"] == 1


async def test_a_policy_on_the_uri_sees_the_path_as_routed_whatever_its_extra_slashes(
    root: httpx.AsyncClient, api_client: ClientMaker
) -> None:
    """A policy allowing everything but ``/Client...`` cannot be slipped past with ``//Client/x``,
    ``/Client/x/`` or an encoded slash: routing reads those as ``/Client/x``, and so does the policy."""
    narrow = await api_client("narrow")
    policy = {
        "engine": "matcho",
        "link": [{"reference": "Client/narrow"}],
        "matcho": {"uri": {"$not": "#^/(Client|AccessPolicy)(/.*)?$"}},
    }
    assert (await root.put("/AccessPolicy/no-clients", json=policy)).status_code == 201
    assert (await narrow.get("/Patient")).status_code == 200
    assert (await narrow.get("/Client/narrow")).status_code == 403
    for path in ("//Client/narrow", "/Client/narrow/", "/%2FClient/narrow", "/Client//narrow"):
        request = narrow.build_request("GET", "/Client/narrow")
        request.url = request.url.copy_with(raw_path=path.encode())
        response = await narrow.send(request)
        assert response.status_code == 403, (path, response.text)
    request = narrow.build_request("GET", "/Patient")
    request.url = request.url.copy_with(raw_path=b"//Patient/")
    assert (await narrow.send(request)).status_code == 200
