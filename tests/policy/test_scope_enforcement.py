"""SMART system scopes enforced on the API, together with AccessPolicies (both backends)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from fhirbox.auth.principal import Principal
from fhirbox.http.routing import Route
from fhirbox.policy.scope_enforcement import ScopeAuthorizer
from tests.oauth.support import SECRET, bearer, put_client

Call = tuple[str, str, dict[str, Any] | list[Any] | None]


async def smart_client(
    root: httpx.AsyncClient, scope: list[str], *, policy: bool = True, jwt: bool = False
) -> None:
    body: dict[str, Any] = {"secret": SECRET, "grant_types": ["client_credentials"], "scope": scope}
    if jwt:
        body["auth"] = {"client_credentials": {"token_format": "jwt"}}
    await put_client(root, "smart", body)
    if policy:
        allow = {"engine": "allow", "link": [{"id": "smart", "resourceType": "Client"}]}
        assert (await root.put("/AccessPolicy/smart", json=allow)).status_code in (200, 201)


async def token_for(client: httpx.AsyncClient, scope: str) -> str:
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=("smart", SECRET),
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == scope
    return str(response.json()["access_token"])


def refused_for_scope(response: httpx.Response, needed: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    challenge = response.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert f'scope="{needed}"' in challenge


async def seed(root: httpx.AsyncClient) -> dict[str, str]:
    """Two Patients and three Observations (two ``lab``, one ``vital``); their version ids by id."""
    versions = {}
    for id_ in ("p1", "p2"):
        response = await root.put(f"/Patient/{id_}", json={"name": [{"family": id_}]})
        assert response.status_code == 201
        versions[id_] = response.json()["meta"]["versionId"]
    for id_, category in (("lab1", "lab"), ("lab2", "lab"), ("vital1", "vital")):
        response = await root.put(f"/Observation/{id_}", json={"category": category, "status": "final"})
        assert response.status_code == 201
        versions[id_] = response.json()["meta"]["versionId"]
    return versions


# Each interaction, the letter it needs, and the status it answers when allowed.
INTERACTIONS: list[tuple[str, str, str, Any, int]] = [
    ("c", "POST", "/Patient", {"name": [{"family": "new"}]}, 201),
    ("c", "PUT", "/Patient/new-id", {"name": [{"family": "new"}]}, 201),
    ("r", "GET", "/Patient/p1", None, 200),
    ("r", "GET", "/Patient/p1/_history", None, 200),
    ("r", "GET", "/Patient/p1/_history/{p1}", None, 200),
    ("u", "PUT", "/Patient/p1", {"name": [{"family": "changed"}]}, 200),
    ("u", "PATCH", "/Patient/p1", {"active": True}, 200),
    ("d", "DELETE", "/Patient/p2", None, 200),
    ("s", "GET", "/Patient", None, 200),
]


@pytest.mark.parametrize("letter", list("cruds"))
async def test_each_letter_covers_exactly_its_interactions(
    client: httpx.AsyncClient, root: httpx.AsyncClient, letter: str
) -> None:
    versions = await seed(root)
    await smart_client(root, ["system/*.cruds"])
    token = await token_for(client, f"system/Patient.{letter}")
    for needs, method, path, body, status in INTERACTIONS:
        url = path.format(**versions)
        response = await client.request(method, url, json=body, headers=bearer(token))
        if needs == letter:
            assert response.status_code == status, (method, path, response.text)
        elif method == "PUT" and letter in "cu":
            # The PUT passes the route check (c or u) and is refused once the write knows which it is.
            refused_for_scope(response, f"system/Patient.{needs}")
        else:
            expected = "cu" if method == "PUT" else needs
            refused_for_scope(response, f"system/Patient.{expected}")


async def test_v1_read_is_rs_and_write_is_cud(client: httpx.AsyncClient, root: httpx.AsyncClient) -> None:
    await seed(root)
    await smart_client(root, ["system/Patient.read", "system/Patient.write"])
    reader = await token_for(client, "system/Patient.read")
    assert (await client.get("/Patient/p1", headers=bearer(reader))).status_code == 200
    assert (await client.get("/Patient", headers=bearer(reader))).status_code == 200
    refused_for_scope(await client.delete("/Patient/p1", headers=bearer(reader)), "system/Patient.d")
    writer = await token_for(client, "system/Patient.write")
    assert (await client.post("/Patient", json={}, headers=bearer(writer))).status_code == 201
    assert (await client.put("/Patient/p1", json={}, headers=bearer(writer))).status_code == 200
    assert (await client.delete("/Patient/p1", headers=bearer(writer))).status_code == 200
    refused_for_scope(await client.get("/Patient/p2", headers=bearer(writer)), "system/Patient.r")


async def test_a_scope_covers_only_its_type_and_a_wildcard_every_type(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["system/*.rs"])
    observations = await token_for(client, "system/Observation.rs")
    refused_for_scope(await client.get("/Patient/p1", headers=bearer(observations)), "system/Patient.r")
    assert (await client.get("/Observation/lab1", headers=bearer(observations))).status_code == 200
    everything = await token_for(client, "system/*.rs")
    assert (await client.get("/Patient/p1", headers=bearer(everything))).status_code == 200
    assert (await client.get("/Observation/lab1", headers=bearer(everything))).status_code == 200


async def test_v2_restrictions_limit_search_results(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["system/Observation.rs"])
    token = await token_for(client, "system/Observation.rs?category=lab")
    found = (await client.get("/Observation", headers=bearer(token))).json()
    assert found["total"] == 2
    assert {entry["resource"]["id"] for entry in found["entry"]} == {"lab1", "lab2"}
    asked_other = (await client.get("/Observation?category=vital", headers=bearer(token))).json()
    assert asked_other["total"] == 0
    by_id = (await client.get("/Observation?_id=vital1,lab1", headers=bearer(token))).json()
    assert [entry["resource"]["id"] for entry in by_id["entry"]] == ["lab1"]


async def test_v2_restrictions_limit_reads(client: httpx.AsyncClient, root: httpx.AsyncClient) -> None:
    versions = await seed(root)
    await smart_client(root, ["system/Observation.rs"])
    token = await token_for(client, "system/Observation.rs?category=lab")
    assert (await client.get("/Observation/lab1", headers=bearer(token))).status_code == 200
    vital = f"/Observation/vital1/_history/{versions['vital1']}"
    for path in ("/Observation/vital1", "/Observation/vital1/_history", vital):
        refused_for_scope(await client.get(path, headers=bearer(token)), "system/Observation.r")


async def test_history_is_refused_when_any_shown_version_is_outside_the_restriction(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    assert (await root.put("/Observation/lab1", json={"category": "vital"})).status_code == 200
    assert (await root.put("/Observation/lab1", json={"category": "lab"})).status_code == 200
    await smart_client(root, ["system/Observation.rs"])
    token = await token_for(client, "system/Observation.rs?category=lab")
    assert (await client.get("/Observation/lab1", headers=bearer(token))).status_code == 200
    refused_for_scope(
        await client.get("/Observation/lab1/_history", headers=bearer(token)), "system/Observation.r"
    )


async def test_v2_restrictions_limit_writes_before_and_after(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["system/Observation.cruds"])
    token = await token_for(client, "system/Observation.cud?category=lab")
    auth = bearer(token)
    lab = {"category": "lab", "status": "amended"}
    assert (await client.put("/Observation/lab1", json=lab, headers=auth)).status_code == 200
    # moving a resource out of the restriction, or touching one outside it, is refused
    vital = {"category": "vital"}
    refused_for_scope(await client.put("/Observation/lab1", json=vital, headers=auth), "system/Observation.u")
    refused_for_scope(await client.put("/Observation/vital1", json=lab, headers=auth), "system/Observation.u")
    patch = [{"op": "replace", "path": "/category", "value": "vital"}]
    patch_headers = {**auth, "Content-Type": "application/json-patch+json"}
    refused_for_scope(
        await client.patch("/Observation/lab2", json=patch, headers=patch_headers), "system/Observation.u"
    )
    refused_for_scope(await client.delete("/Observation/vital1", headers=auth), "system/Observation.d")
    refused_for_scope(await client.post("/Observation", json=vital, headers=auth), "system/Observation.c")
    refused_for_scope(await client.put("/Observation/new", json=vital, headers=auth), "system/Observation.c")
    assert (await client.post("/Observation", json=lab, headers=auth)).status_code == 201
    assert (await client.delete("/Observation/lab2", headers=auth)).status_code == 200
    # nothing refused was written
    assert (await root.get("/Observation/vital1")).json()["category"] == "vital"
    assert (await root.get("/Observation/lab1")).json()["category"] == "lab"
    assert (await root.get("/Observation/new")).status_code == 404


async def test_a_put_allowed_only_to_create_cannot_update_even_when_racing(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    """Whether a PUT creates is decided inside the atomic write: two concurrent PUTs of one new id
    with a create-only token create it once, and the other is refused rather than updating it."""
    await smart_client(root, ["system/Patient.c"])
    token = await token_for(client, "system/Patient.c")
    responses = await asyncio.gather(
        *(client.put("/Patient/raced", json={"n": i}, headers=bearer(token)) for i in range(4))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [201, 403, 403, 403]
    assert (await root.get("/Patient/raced/_history")).json()["total"] == 1


async def test_scopes_and_policies_must_both_allow(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["system/Patient.rs"], policy=False)
    token = await token_for(client, "system/Patient.rs")
    no_policy = await client.get("/Patient/p1", headers=bearer(token))
    assert no_policy.status_code == 403 and no_policy.json()["id"] == "forbidden"
    assert "insufficient_scope" not in no_policy.headers.get("www-authenticate", "")
    read_only = {
        "engine": "matcho",
        "link": [{"id": "smart", "resourceType": "Client"}],
        "matcho": {"request-method": "get"},
    }
    assert (await root.put("/AccessPolicy/smart", json=read_only)).status_code == 201
    assert (await client.get("/Patient/p1", headers=bearer(token))).status_code == 200
    refused_for_scope(await client.delete("/Patient/p1", headers=bearer(token)), "system/Patient.d")


async def test_tokens_without_system_scopes_keep_todays_meaning(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["custom", "patient/*.read"])
    token = await token_for(client, "custom patient/*.read")
    assert (await client.delete("/Patient/p1", headers=bearer(token))).status_code == 200
    assert (await client.post("/Observation", json={}, headers=bearer(token))).status_code == 201


async def test_one_system_scope_makes_the_other_scopes_unable_to_widen_access(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["custom", "system/Patient.r"])
    token = await token_for(client, "custom system/Patient.r")
    assert (await client.get("/Patient/p1", headers=bearer(token))).status_code == 200
    refused_for_scope(await client.get("/Observation/lab1", headers=bearer(token)), "system/Observation.r")


async def test_jwt_tokens_are_enforced_alike(client: httpx.AsyncClient, root: httpx.AsyncClient) -> None:
    await seed(root)
    await smart_client(root, ["system/Patient.r"], jwt=True)
    token = await token_for(client, "system/Patient.r")
    assert token.count(".") == 2
    assert (await client.get("/Patient/p1", headers=bearer(token))).status_code == 200
    refused_for_scope(await client.get("/Patient", headers=bearer(token)), "system/Patient.s")


async def test_closing_its_own_session_is_not_a_resource_interaction(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await smart_client(root, ["system/Patient.r"])
    token = await token_for(client, "system/Patient.r")
    assert (await client.delete("/Session", headers=bearer(token))).status_code == 200


async def test_restrictions_on_hidden_fields_never_match(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    """A restriction on a field the server never shows (a Client's secret hash) would be an oracle."""
    await smart_client(root, ["system/Client.rs"])
    hashed = "scrypt$anything"
    token = await token_for(client, f"system/Client.rs?secret={hashed}")
    refused_for_scope(await client.get("/Client", headers=bearer(token)), "system/Client.s")
    refused_for_scope(await client.get("/Client/smart", headers=bearer(token)), "system/Client.r")


@pytest.mark.parametrize(
    ("requested", "described"),
    [
        ("system/Patient.c", "system/Patient.c"),
        ("system/*.rs", "system/*.rs"),
        ("system/Observation.rs", "system/Observation.rs"),
        ("system/Patient.sr", "Invalid scope"),
        ("system/Patient.rs?_id=1", "Invalid scope"),
    ],
)
async def test_an_uncovered_or_malformed_scope_is_invalid_scope(
    client: httpx.AsyncClient, root: httpx.AsyncClient, requested: str, described: str
) -> None:
    await smart_client(root, ["system/Patient.read"])
    response = await client.post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": requested}, auth=("smart", SECRET)
    )
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_scope"
    assert described in body["error_description"]


async def test_the_token_response_scope_is_the_granted_list(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await smart_client(root, ["system/*.read", "other"])
    response = await client.post(
        "/auth/token",
        data={"grant_type": "client_credentials", "scope": "system/Patient.rs system/Observation.r other"},
        auth=("smart", SECRET),
    )
    assert response.json()["scope"] == "system/Patient.rs system/Observation.r other"


@pytest.mark.parametrize(
    "scope",
    [
        ["system/Patient.rw"],
        ["system/Patient.read?x=1"],
        ["system/Patient.rs?a=" + "x" * 600],
        [f"s{i}" for i in range(101)],
    ],
)
async def test_clients_with_malformed_or_too_many_scopes_are_422(
    root: httpx.AsyncClient, scope: list[str]
) -> None:
    body = {"secret": SECRET, "grant_types": ["client_credentials"], "scope": scope}
    response = await root.put("/Client/bad", json=body)
    assert response.status_code == 422
    assert "Client.scope" in response.json()["issue"][0]["diagnostics"]


async def test_root_is_not_limited_by_scopes() -> None:
    """The root client's tokens are never limited (its Client cannot be given scopes through the API,
    so this is checked on the authorizer itself)."""
    root = Principal(client_id="root", client={}, is_root=True, scope=("system/Patient.r",))
    request: Any = object()  # never read for the root client

    async def never_called(*_: Any) -> Any:
        raise AssertionError

    await ScopeAuthorizer().authorize(request, root, Route(never_called, interaction="delete"))


async def test_with_several_restricted_scopes_a_search_uses_the_one_it_asks_for(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await seed(root)
    await smart_client(root, ["system/Observation.rs"])
    token = await token_for(client, "system/Observation.rs?category=lab system/Observation.rs?category=vital")
    asked = (await client.get("/Observation?category=vital", headers=bearer(token))).json()
    assert [entry["resource"]["id"] for entry in asked["entry"]] == ["vital1"]
    unasked = (await client.get("/Observation", headers=bearer(token))).json()
    assert {entry["resource"]["id"] for entry in unasked["entry"]} == {"lab1", "lab2"}
    assert (await client.get("/Observation/vital1", headers=bearer(token))).status_code == 200


async def test_too_many_requested_scopes_are_invalid_scope(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    await smart_client(root, ["system/*.*"])
    scope = " ".join(f"system/T{i}.r" for i in range(101))
    response = await client.post(
        "/auth/token", data={"grant_type": "client_credentials", "scope": scope}, auth=("smart", SECRET)
    )
    assert response.status_code == 400 and response.json()["error"] == "invalid_scope"


async def test_a_token_granted_none_of_its_clients_smart_scopes_makes_no_resource_interaction(
    client: httpx.AsyncClient, root: httpx.AsyncClient
) -> None:
    """A client given SMART scopes cannot escape them by asking only for its other scopes."""
    await seed(root)
    await smart_client(root, ["system/Patient.rs", "launch"])
    token = await token_for(client, "launch")
    refused_for_scope(await client.get("/Patient/p1", headers=bearer(token)), "system/Patient.r")
    written = await client.put("/Client/backdoor", json={"secret": "x" * 20}, headers=bearer(token))
    refused_for_scope(written, "system/Client.cu")
    assert (await root.get("/Client/backdoor")).status_code == 404
    # Its SMART scopes still work as granted.
    reader = await token_for(client, "system/Patient.rs launch")
    assert (await client.get("/Patient/p1", headers=bearer(reader))).status_code == 200
