"""CRUD over HTTP in Aidbox's format: PUT, POST, GET, DELETE, PATCH, meta, ETag and If-Match."""

from __future__ import annotations

import asyncio

import httpx

MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}


def outcome_id(response: httpx.Response) -> str:
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    return str(body["id"])


async def test_put_creates_with_201_then_updates_with_200(root: httpx.AsyncClient) -> None:
    created = await root.put("/Patient/p1", json={"name": [{"family": "Doe"}]})
    assert created.status_code == 201
    updated = await root.put("/Patient/p1", json={"name": [{"family": "Roe"}]})
    assert updated.status_code == 200
    assert (await root.get("/Patient/p1")).json()["name"] == [{"family": "Roe"}]


async def test_put_fills_resource_type_and_path_id_wins(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/path-id", json={"id": "body-id", "active": True})
    body = response.json()
    assert body["resourceType"] == "Patient"
    assert body["id"] == "path-id"
    assert (await root.get("/Patient/body-id")).status_code == 404


async def test_put_with_wrong_resource_type_is_422(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/p1", json={"resourceType": "Observation"})
    assert response.status_code == 422
    assert outcome_id(response) == "invalid"


async def test_put_with_invalid_id_is_422(root: httpx.AsyncClient) -> None:
    for bad in ("has_underscore", "x" * 65, "sp%20ace"):
        response = await root.put(f"/Patient/{bad}", json={})
        assert response.status_code == 422, bad
        assert outcome_id(response) == "invalid"


async def test_non_object_bodies_are_422(root: httpx.AsyncClient) -> None:
    headers = {"Content-Type": "application/json"}
    for body in (b"[1, 2]", b'"text"', b"42", b"null"):
        assert (await root.put("/Patient/p1", content=body, headers=headers)).status_code == 422, body
        assert (await root.post("/Patient", content=body, headers=headers)).status_code == 422, body


async def test_post_creates_with_server_id_and_location(root: httpx.AsyncClient) -> None:
    response = await root.post("/Patient", json={"active": True})
    assert response.status_code == 201
    body = response.json()
    assert body["id"]
    version = body["meta"]["versionId"]
    assert response.headers["location"] == f"http://testserver/Patient/{body['id']}/_history/{version}"
    assert (await root.get(f"/Patient/{body['id']}")).json()["active"] is True


async def test_post_with_an_existing_body_id_is_409(root: httpx.AsyncClient) -> None:
    assert (await root.post("/Patient", json={"id": "dup"})).status_code == 201
    response = await root.post("/Patient", json={"id": "dup"})
    assert response.status_code == 409
    assert outcome_id(response) == "conflict"


async def test_post_with_an_invalid_body_id_is_422(root: httpx.AsyncClient) -> None:
    assert (await root.post("/Patient", json={"id": "no/slash"})).status_code == 422
    assert (await root.post("/Patient", json={"id": 7})).status_code == 422


async def test_get_of_a_resource_that_never_existed_is_404_not_found(root: httpx.AsyncClient) -> None:
    response = await root.get("/Patient/nobody")
    assert response.status_code == 404
    body = response.json()
    assert body["id"] == "not-found"
    assert body["issue"][0] == {
        "severity": "fatal",
        "code": "not-found",
        "diagnostics": "Resource Patient/nobody not found",
    }


async def test_get_of_a_deleted_resource_is_410(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/gone", json={})
    await root.delete("/Patient/gone")
    response = await root.get("/Patient/gone")
    assert response.status_code == 410
    assert outcome_id(response) == "deleted"


async def test_delete_returns_the_resource_then_204(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/d1", json={"active": True})
    first = await root.delete("/Patient/d1")
    assert first.status_code == 200
    assert first.json()["active"] is True
    second = await root.delete("/Patient/d1")
    assert second.status_code == 204
    assert second.content == b""
    assert (await root.delete("/Patient/never")).status_code == 204


async def test_a_deleted_resource_can_be_created_again(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/again", json={})
    await root.delete("/Patient/again")
    assert (await root.put("/Patient/again", json={"active": False})).status_code == 201


async def test_meta_version_is_an_increasing_string_and_created_at_is_kept(root: httpx.AsyncClient) -> None:
    first = (await root.put("/Patient/m", json={})).json()["meta"]
    second = (await root.put("/Patient/m", json={"active": True})).json()["meta"]
    assert isinstance(first["versionId"], str)
    assert int(second["versionId"]) > int(first["versionId"])
    assert second["createdAt"] == first["createdAt"] == first["lastUpdated"]
    assert second["lastUpdated"] >= first["lastUpdated"]
    assert second["lastUpdated"].endswith("Z")


async def test_etag_is_the_weak_version(root: httpx.AsyncClient) -> None:
    response = await root.put("/Patient/e", json={})
    version = response.json()["meta"]["versionId"]
    assert response.headers["etag"] == f'W/"{version}"'
    assert (await root.get("/Patient/e")).headers["etag"] == f'W/"{version}"'


async def test_if_match_on_put_updates_only_the_named_version(root: httpx.AsyncClient) -> None:
    version = (await root.put("/Patient/im", json={})).json()["meta"]["versionId"]
    stale = await root.put("/Patient/im", json={"active": True}, headers={"If-Match": "0"})
    assert stale.status_code == 412
    assert outcome_id(stale) == "conflict"
    assert stale.json()["issue"][0]["diagnostics"] == "Version Id mismatch"
    fresh = await root.put("/Patient/im", json={"active": True}, headers={"If-Match": f'W/"{version}"'})
    assert fresh.status_code == 200
    again = await root.put("/Patient/im", json={"active": False}, headers={"If-Match": version})
    assert again.status_code == 412


async def test_if_match_star_on_a_missing_resource_is_412(root: httpx.AsyncClient) -> None:
    assert (await root.put("/Patient/nothing", json={}, headers={"If-Match": "*"})).status_code == 412


async def test_if_match_on_patch_and_delete(root: httpx.AsyncClient) -> None:
    version = (await root.put("/Patient/imp", json={})).json()["meta"]["versionId"]
    wrong = str(int(version) + 1000)
    assert (
        await root.patch("/Patient/imp", json={"a": 1}, headers={**MERGE, "If-Match": wrong})
    ).status_code == 412
    patched = await root.patch("/Patient/imp", json={"a": 2}, headers={**MERGE, "If-Match": version})
    assert patched.status_code == 200
    assert (await root.delete("/Patient/imp", headers={"If-Match": version})).status_code == 412
    assert (await root.get("/Patient/imp")).status_code == 200
    current = patched.json()["meta"]["versionId"]
    assert (await root.delete("/Patient/imp", headers={"If-Match": current})).status_code == 200


async def test_stale_if_match_on_patch_is_412(root: httpx.AsyncClient) -> None:
    version = (await root.put("/Patient/stale", json={})).json()["meta"]["versionId"]
    await root.put("/Patient/stale", json={"active": True})
    response = await root.patch("/Patient/stale", json={"a": 1}, headers={**MERGE, "If-Match": version})
    assert response.status_code == 412


async def test_merge_patch_merges_and_null_removes(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/mp", json={"name": {"given": "A", "family": "B"}, "active": True})
    response = await root.patch(
        "/Patient/mp", json={"name": {"given": "C"}, "active": None, "gender": "f"}, headers=MERGE
    )
    assert response.status_code == 200
    body = response.json()
    assert body["name"] == {"given": "C", "family": "B"}
    assert "active" not in body
    assert body["gender"] == "f"


async def test_json_patch_applies_operations(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/jp", json={"tags": ["a"]})
    ops = [{"op": "add", "path": "/tags/-", "value": "b"}, {"op": "replace", "path": "/tags/0", "value": "z"}]
    response = await root.patch("/Patient/jp", json=ops, headers=JSON_PATCH)
    assert response.status_code == 200
    assert response.json()["tags"] == ["z", "b"]


async def test_patch_keeps_created_at_and_bumps_version(root: httpx.AsyncClient) -> None:
    before = (await root.put("/Patient/pv", json={})).json()["meta"]
    after = (await root.patch("/Patient/pv", json={"a": 1}, headers=MERGE)).json()["meta"]
    assert int(after["versionId"]) > int(before["versionId"])
    assert after["createdAt"] == before["createdAt"]


async def test_patch_of_missing_or_deleted_resource(root: httpx.AsyncClient) -> None:
    assert (await root.patch("/Patient/none", json={"a": 1}, headers=MERGE)).status_code == 404
    await root.put("/Patient/del", json={})
    await root.delete("/Patient/del")
    assert (await root.patch("/Patient/del", json={"a": 1}, headers=MERGE)).status_code == 410


async def test_bad_patches_are_client_errors_never_500(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/bp", json={"a": {"b": 1}})
    cases: list[tuple[object, dict[str, str], int]] = [
        ([{"op": "nope", "path": "/a"}], JSON_PATCH, 400),
        ([{"op": "add"}], JSON_PATCH, 400),
        ([1], JSON_PATCH, 400),
        ({"op": "add"}, JSON_PATCH, 400),
        ([{"op": "add", "path": "no-slash", "value": 1}], JSON_PATCH, 400),
        ([{"op": "remove", "path": "/missing"}], JSON_PATCH, 409),
        ([{"op": "test", "path": "/a/b", "value": 2}], JSON_PATCH, 409),
        ([{"op": "replace", "path": "", "value": [1]}], JSON_PATCH, 422),
        ([{"op": "replace", "path": "/id", "value": "other"}], JSON_PATCH, 422),
        ([{"op": "replace", "path": "/resourceType", "value": "Other"}], JSON_PATCH, 422),
        ([1, 2], MERGE, 400),
        ({"id": "other"}, MERGE, 422),
    ]
    for patch, headers, status in cases:
        response = await root.patch("/Patient/bp", json=patch, headers=headers)
        assert response.status_code == status, (patch, response.text)
        assert response.json()["resourceType"] == "OperationOutcome"
    assert (await root.get("/Patient/bp")).json()["a"] == {"b": 1}


async def test_patch_with_malformed_json_is_400(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/mj", json={})
    response = await root.patch("/Patient/mj", content=b"{not json", headers=MERGE)
    assert response.status_code == 400


async def test_concurrent_json_patch_appends_are_all_kept(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/counter", json={"items": []})

    async def append(n: int) -> int:
        ops = [{"op": "add", "path": "/items/-", "value": n}]
        return (await root.patch("/Patient/counter", json=ops, headers=JSON_PATCH)).status_code

    statuses = await asyncio.gather(*(append(n) for n in range(30)))
    assert statuses == [200] * 30
    items = (await root.get("/Patient/counter")).json()["items"]
    assert sorted(items) == list(range(30))


async def test_concurrent_puts_each_get_their_own_version(root: httpx.AsyncClient) -> None:
    async def put(n: int) -> str:
        response = await root.put("/Patient/race", json={"n": n})
        assert response.status_code in (200, 201)
        return str(response.json()["meta"]["versionId"])

    versions = await asyncio.gather(*(put(n) for n in range(20)))
    assert len(set(versions)) == 20
    history = (await root.get("/Patient/race/_history", params={"_count": "100"})).json()
    assert history["total"] == 20


async def test_unknown_resource_type_shape_is_404(root: httpx.AsyncClient) -> None:
    assert (await root.get("/patient/x")).status_code == 404
    assert (await root.put("/lower/x", json={})).status_code == 404


async def test_a_trailing_newline_is_not_part_of_a_valid_type_or_id(root: httpx.AsyncClient) -> None:
    response = await root.put("/Client%0A/x", json={"secret": "plain-text-secret"})
    assert response.status_code == 404
    assert "plain-text-secret" not in response.text
    created = await root.post("/Patient", json={"id": "x\n"})
    assert created.status_code == 422
    assert (await root.put("/Patient/x%0A", json={})).status_code == 422
    assert (await root.get("/Patient")).json()["total"] == 0


async def test_a_json_patch_that_keeps_doubling_the_resource_is_refused_and_changes_nothing(
    root: httpx.AsyncClient,
) -> None:
    """Each `copy` of the whole resource into itself doubles it: forty of them (under 2 KB of body)
    would make a resource of 2^40 nodes. The patch is refused once the result passes the body limit,
    before it is built, and the resource stays as it was."""
    await root.put("/Patient/grow", json={"name": "x"})
    ops = [{"op": "add", "path": "/l", "value": []}]
    ops += [{"op": "copy", "from": "", "path": "/l/-"} for _ in range(40)]
    response = await root.patch("/Patient/grow", json=ops, headers=JSON_PATCH)
    assert response.status_code == 413
    assert response.json()["resourceType"] == "OperationOutcome"
    stored = (await root.get("/Patient/grow")).json()
    assert "l" not in stored


async def test_a_json_patch_nesting_the_resource_too_deep_is_refused_and_searches_still_answer(
    root: httpx.AsyncClient,
) -> None:
    """A chain 90 levels deep, copied into its own deepest object, nests 180 levels: past the body's
    nesting limit the patch is refused (400) as such a body would be, and the type's search still
    answers."""
    await root.put("/Basic/deep", json={"code": "x"})
    chain: dict[str, object] = {"c": 1}
    for _ in range(89):
        chain = {"c": chain}
    ops = [
        {"op": "add", "path": "/x", "value": chain},
        {"op": "copy", "from": "/x", "path": "/x" + "/c" * 89 + "/d"},
    ]
    response = await root.patch("/Basic/deep", json=ops, headers=JSON_PATCH)
    assert response.status_code == 400
    assert "nested deeper" in response.json()["issue"][0]["diagnostics"]
    search = await root.get("/Basic")
    assert search.status_code == 200
    assert search.json()["entry"][0]["resource"]["code"] == "x"
    assert "x" not in search.json()["entry"][0]["resource"]


async def test_a_version_number_too_long_for_an_int_is_not_found(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/long-vid", json={})
    response = await root.get("/Patient/long-vid/_history/" + "1" * 5000)
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
