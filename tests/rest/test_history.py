"""History over HTTP: every version newest first, deletes included, and reading one version."""

from __future__ import annotations

import httpx


async def test_history_lists_versions_newest_first_with_deletes(root: httpx.AsyncClient) -> None:
    v1 = (await root.put("/Patient/h", json={"n": 1})).json()["meta"]["versionId"]
    v2 = (await root.put("/Patient/h", json={"n": 2})).json()["meta"]["versionId"]
    await root.delete("/Patient/h")
    response = await root.get("/Patient/h/_history")
    assert response.status_code == 200
    bundle = response.json()
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "history"
    assert bundle["total"] == 3
    methods = [entry["request"]["method"] for entry in bundle["entry"]]
    assert methods == ["DELETE", "PUT", "POST"]
    versions = [entry["resource"]["meta"]["versionId"] for entry in bundle["entry"]]
    assert versions[1:] == [v2, v1]
    assert int(versions[0]) > int(v2)


async def test_history_entries_say_what_each_version_did_as_a_request_that_makes_it(
    root: httpx.AsyncClient,
) -> None:
    """The store records create, update or delete, not the HTTP method: a creation by PUT shows as a POST
    to the type (which keeps the id), a PATCH as a PUT of the whole version, and the status says which."""
    merge = {"Content-Type": "application/merge-patch+json"}
    assert (await root.put("/Patient/hm", json={"n": 1})).status_code == 201
    assert (await root.patch("/Patient/hm", json={"n": 2}, headers=merge)).status_code == 200
    assert (await root.delete("/Patient/hm")).status_code == 200
    assert (await root.post("/Patient", json={"id": "hm", "n": 3})).status_code == 201
    entries = (await root.get("/Patient/hm/_history")).json()["entry"]
    shown = [(e["request"]["method"], e["request"]["url"], e["response"]["status"]) for e in entries]
    assert shown == [
        ("POST", "Patient", "201 Created"),
        ("DELETE", "Patient/hm", "200 OK"),
        ("PUT", "Patient/hm", "200 OK"),
        ("POST", "Patient", "201 Created"),
    ]
    # Each entry's request, sent with its resource, makes that version again.
    first, patched = entries[3], entries[2]
    assert (await root.delete("/Patient/hm")).status_code == 200
    replayed = await root.post(f"/{first['request']['url']}", json=first["resource"])
    assert (replayed.status_code, replayed.json()["id"], replayed.json()["n"]) == (201, "hm", 1)
    replayed = await root.put(f"/{patched['request']['url']}", json=patched["resource"])
    assert (replayed.status_code, replayed.json()["n"]) == (200, 2)


async def test_history_pages_with_count_and_page(root: httpx.AsyncClient) -> None:
    for n in range(3):
        await root.put("/Patient/hp", json={"n": n})
    first = (await root.get("/Patient/hp/_history", params={"_count": "2"})).json()
    assert [e["resource"]["n"] for e in first["entry"]] == [2, 1]
    second = (await root.get("/Patient/hp/_history", params={"_count": "2", "_page": "2"})).json()
    assert [e["resource"]["n"] for e in second["entry"]] == [0]


async def test_history_bad_parameters_are_400(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/hb", json={})
    for params in ({"_count": "0"}, {"_page": "-2"}, {"_whatever": "1"}):
        assert (await root.get("/Patient/hb/_history", params=params)).status_code == 400, params


async def test_history_of_a_resource_that_never_existed_is_404(root: httpx.AsyncClient) -> None:
    response = await root.get("/Patient/none/_history")
    assert response.status_code == 404
    assert response.json()["id"] == "not-found"


async def test_reading_one_past_version(root: httpx.AsyncClient) -> None:
    v1 = (await root.put("/Patient/v", json={"n": 1})).json()["meta"]["versionId"]
    await root.put("/Patient/v", json={"n": 2})
    response = await root.get(f"/Patient/v/_history/{v1}")
    assert response.status_code == 200
    assert response.json()["n"] == 1
    assert response.headers["etag"] == f'W/"{v1}"'


async def test_unknown_versions_are_404(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/uv", json={})
    for vid in ("999999", "abc", "99999999999999999999999999", "-1"):
        response = await root.get(f"/Patient/uv/_history/{vid}")
        assert response.status_code == 404, vid
        assert response.json()["id"] == "not-found"


async def test_a_version_of_another_resource_is_not_found(root: httpx.AsyncClient) -> None:
    other = (await root.put("/Patient/other", json={})).json()["meta"]["versionId"]
    await root.put("/Patient/mine", json={})
    assert (await root.get(f"/Patient/mine/_history/{other}")).status_code == 404
