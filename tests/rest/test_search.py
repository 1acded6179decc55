"""Search over HTTP: the searchset Bundle, paging, sorting, _elements, _id, _lastUpdated and paths."""

from __future__ import annotations

from typing import Any

import httpx
import pytest


async def search(root: httpx.AsyncClient, type_: str = "Patient", **params: str) -> dict[str, Any]:
    response = await root.get(f"/{type_}", params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def ids(bundle: dict[str, Any]) -> list[str]:
    return [entry["resource"]["id"] for entry in bundle["entry"]]


def links(bundle: dict[str, Any]) -> dict[str, str]:
    return {link["relation"]: link["url"] for link in bundle["link"]}


async def put_patients(root: httpx.AsyncClient, count: int) -> None:
    for n in range(count):
        assert (await root.put(f"/Patient/p{n:02d}", json={"n": n})).status_code == 201


async def test_search_answers_a_searchset_bundle(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/a", json={"active": True})
    bundle = await search(root)
    assert bundle["resourceType"] == "Bundle"
    assert bundle["type"] == "searchset"
    assert bundle["total"] == 1
    assert bundle["entry"][0]["resource"]["id"] == "a"
    assert links(bundle)["self"].startswith("http://testserver/Patient?")
    assert "first" in links(bundle)


async def test_search_of_an_empty_type_has_total_zero(root: httpx.AsyncClient) -> None:
    bundle = await search(root, "Nothing")
    assert bundle["total"] == 0
    assert bundle["entry"] == []


async def test_deleted_resources_are_not_found_by_search(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/keep", json={})
    await root.put("/Patient/drop", json={})
    await root.delete("/Patient/drop")
    assert ids(await search(root)) == ["keep"]


async def test_count_and_page_walk_the_results_with_next_and_previous(root: httpx.AsyncClient) -> None:
    await put_patients(root, 5)
    first = await search(root, _count="2", _sort="_id")
    assert first["total"] == 5
    assert ids(first) == ["p00", "p01"]
    assert "previous" not in links(first)
    second_url = links(first)["next"]
    second = (await root.get(second_url)).json()
    assert ids(second) == ["p02", "p03"]
    assert "previous" in links(second)
    third = (await root.get(links(second)["next"])).json()
    assert ids(third) == ["p04"]
    assert "next" not in links(third)
    assert ids((await root.get(links(third)["previous"])).json()) == ["p02", "p03"]


async def test_count_accepts_up_to_1000(root: httpx.AsyncClient) -> None:
    await put_patients(root, 3)
    assert len((await search(root, _count="1000"))["entry"]) == 3


async def test_default_page_size_is_100(root: httpx.AsyncClient) -> None:
    for n in range(101):
        await root.put(f"/Obs/o{n}", json={})
    bundle = await search(root, "Obs")
    assert bundle["total"] == 101
    assert len(bundle["entry"]) == 100
    assert "next" in links(bundle)


async def test_bad_count_and_page_values_are_400(root: httpx.AsyncClient) -> None:
    for params in (
        {"_count": "0"},
        {"_count": "1001"},
        {"_count": "ten"},
        {"_count": "-1"},
        {"_page": "0"},
        {"_page": "x"},
        {"_page": "99999999999999999999999"},
    ):
        response = await root.get("/Patient", params=params)
        assert response.status_code == 400, params
        assert response.json()["id"] == "invalid"


async def test_sort_by_dotted_path_descending_and_multiple_keys(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/a", json={"name": {"family": "B"}, "age": 1})
    await root.put("/Patient/b", json={"name": {"family": "A"}, "age": 2})
    await root.put("/Patient/c", json={"name": {"family": "B"}, "age": 3})
    assert ids(await search(root, _sort="name.family,-age")) == ["b", "c", "a"]
    assert ids(await search(root, _sort="-name.family,age")) == ["a", "c", "b"]
    assert ids(await search(root, _sort="-_id")) == ["c", "b", "a"]


async def test_sort_by_last_updated(root: httpx.AsyncClient) -> None:
    for id_ in ("z", "y", "x"):
        await root.put(f"/Patient/{id_}", json={})
    assert ids(await search(root, _sort="_lastUpdated")) == ["z", "y", "x"]
    assert ids(await search(root, _sort="-_lastUpdated")) == ["x", "y", "z"]


async def test_elements_keeps_only_named_fields(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/e", json={"name": {"given": "A", "family": "B"}, "active": True, "x": 1})
    resource = (await search(root, _elements="name.family,active"))["entry"][0]["resource"]
    assert resource["name"] == {"family": "B"}
    assert resource["active"] is True
    assert "x" not in resource
    assert resource["id"] == "e"
    assert resource["resourceType"] == "Patient"


async def test_elements_with_minus_excludes_fields(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/e", json={"name": {"given": "A", "family": "B"}, "active": True})
    resource = (await search(root, _elements="-name.given,-active"))["entry"][0]["resource"]
    assert resource["name"] == {"family": "B"}
    assert "active" not in resource
    assert (await root.get("/Patient/e")).json()["name"] == {"given": "A", "family": "B"}


async def test_search_by_id_list(root: httpx.AsyncClient) -> None:
    await put_patients(root, 4)
    assert ids(await search(root, _id="p01,p03", _sort="_id")) == ["p01", "p03"]


async def test_last_updated_prefixes(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/old", json={})
    middle = (await root.put("/Patient/mid", json={})).json()["meta"]["lastUpdated"]
    await root.put("/Patient/new", json={})
    assert ids(await search(root, _lastUpdated=f"gt{middle}", _sort="_id")) == ["new"]
    assert ids(await search(root, _lastUpdated=f"ge{middle}", _sort="_id")) == ["mid", "new"]
    assert ids(await search(root, _lastUpdated=f"lt{middle}", _sort="_id")) == ["old"]
    assert ids(await search(root, _lastUpdated=f"le{middle}", _sort="_id")) == ["mid", "old"]
    assert ids(await search(root, _lastUpdated="gt2000-01-01", _sort="_id")) == ["mid", "new", "old"]
    assert (await search(root, _lastUpdated="lt2000-01-01"))["total"] == 0


async def test_bad_last_updated_is_400(root: httpx.AsyncClient) -> None:
    assert (await root.get("/Patient", params={"_lastUpdated": "gtyesterday"})).status_code == 400


async def test_equality_on_dotted_paths(root: httpx.AsyncClient) -> None:
    await root.put("/Encounter/s1", json={"client": {"id": "api-client"}, "n": 5, "on": True})
    await root.put("/Encounter/s2", json={"client": {"id": "other"}, "n": 6, "on": False})
    assert ids(await search(root, "Encounter", **{"client.id": "api-client"})) == ["s1"]
    assert ids(await search(root, "Encounter", n="6")) == ["s2"]
    assert ids(await search(root, "Encounter", on="true")) == ["s1"]
    assert (await search(root, "Encounter", **{"client.id": "nobody"}))["total"] == 0


async def test_equality_matches_any_element_of_an_array(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/t", json={"tags": ["a", "b"]})
    await root.put("/Patient/u", json={"tags": ["c"]})
    assert ids(await search(root, tags="b")) == ["t"]


async def test_unknown_underscore_parameter_is_400(root: httpx.AsyncClient) -> None:
    response = await root.get("/Patient", params={"_bogus": "1"})
    assert response.status_code == 400
    assert "_bogus" in response.json()["issue"][0]["diagnostics"]


async def test_malformed_parameter_names_and_sort_keys_are_400(root: httpx.AsyncClient) -> None:
    for params in ({"a..b": "1"}, {"_sort": "a b"}, {"_elements": "a;b"}, {"": "x"}):
        assert (await root.get("/Patient", params=params)).status_code == 400, params


async def test_huge_numeric_filter_is_answered(root: httpx.AsyncClient) -> None:
    response = await root.get("/Patient", params={"n": "9" * 30})
    assert response.status_code == 200
    assert response.json()["total"] == 0


async def test_searches_the_store_cannot_run_are_400_not_500(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/p", json={"a": 1})
    bad = {
        "_lastUpdated": "9999-12-31T23:59:59-01:00",  # past datetime's range once in UTC
        ".".join(["a"] * 70): "x",  # SQLite's join limit
        ".".join(["a"] * 17): "x",
        "n": "1" + "0" * 5000,  # more digits than a float or Python's int conversion takes
    }
    for name, value in bad.items():
        response = await root.get("/Patient", params={name: value})
        assert response.status_code in (200, 400), (name[:20], response.text)
        if name != "n":
            assert response.status_code == 400
            assert response.json()["resourceType"] == "OperationOutcome"
    assert (await root.get("/Patient", params={".".join(["a"] * 16): "x"})).status_code == 200
    many = [(f"f{i}", "x") for i in range(2000)]
    response = await root.get("/Patient", params=many)
    assert response.status_code == 400
    assert "at most 100" in response.json()["issue"][0]["diagnostics"]
    assert (await root.get("/Patient", params=many[:100])).status_code == 200


async def test_a_query_string_that_is_not_utf8_is_400_not_ignored(root: httpx.AsyncClient) -> None:
    await root.put("/Patient/a", json={"name": "A"})
    await root.put("/Patient/b", json={"name": "B"})
    assert ids(await search(root, name="B")) == ["b"]
    response = await root.get("/Patient?name=B&x=%FF")
    assert response.status_code == 400
    assert "UTF-8" in response.json()["issue"][0]["diagnostics"]


async def test_total_none_leaves_out_the_count_and_pages_on_while_pages_are_full(
    root: httpx.AsyncClient,
) -> None:
    await put_patients(root, 4)
    first = await search(root, _count="2", _total="none")
    assert "total" not in first
    assert ids(first) == ["p00", "p01"] and "next" in links(first)
    last = await search(root, _count="3", _page="2", _total="none")
    assert ids(last) == ["p03"] and "next" not in links(last)
    assert (await search(root, _total="accurate"))["total"] == 4
    assert (await root.get("/Patient", params={"_total": "sometimes"})).status_code == 400


async def test_text_filters_match_values_whatever_json_escapes_them(root: httpx.AsyncClient) -> None:
    odd = ['say "hi"', "back\\slash", "naïve ☃", "tab\there", "</script>"]
    for n, value in enumerate(odd):
        await root.put(f"/Patient/o{n}", json={"code": {"text": value}, "tags": [{"v": value}]})
    await root.put("/Patient/elsewhere", json={"note": odd[0], "code": {"text": "other"}})
    for n, value in enumerate(odd):
        assert ids(await search(root, **{"code.text": value})) == [f"o{n}"]
        assert ids(await search(root, **{"tags.v": value})) == [f"o{n}"]
    assert ids(await search(root, **{"code.text": "say"})) == []


async def test_a_search_sqlite_gives_up_on_is_a_400_saying_to_narrow_it(
    root: httpx.AsyncClient, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend != "sqlite":
        pytest.skip("SQLite's search budget")
    from fhirbox.storage import sqlite as sqlite_store

    for n in range(50):
        await root.put(f"/Patient/b{n}", json={"a": {"b": n}})
    monkeypatch.setattr(sqlite_store, "SEARCH_BUDGET", 0.0)
    monkeypatch.setattr(sqlite_store, "_PROGRESS_STEPS", 10)
    response = await root.get("/Patient", params=[("a.b", str(n)) for n in range(20)])
    assert response.status_code == 400
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    assert "narrow it" in body["issue"][0]["diagnostics"]
