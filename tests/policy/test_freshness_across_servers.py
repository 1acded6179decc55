"""Policy changes reach every server process sharing the database within one second."""

from __future__ import annotations

from collections.abc import Callable

from tests.support import FRESHNESS_BOUND, ROOT, ServerProcess, basic, wait_until

READER = basic("reader", "reader-secret")
ALLOW_READER = {"engine": "allow", "link": [{"resourceType": "Client", "id": "reader"}]}


def test_policy_created_edited_and_deleted_on_one_server_governs_the_other_within_a_second(
    server_factory: Callable[..., ServerProcess],
) -> None:
    first, second = server_factory(), server_factory()
    with first.client(auth=ROOT) as admin, second.client() as other:
        created = admin.put("/Client/reader", json={"secret": "reader-secret", "grant_types": ["basic"]})
        assert created.status_code == 201
        assert other.get("/Patient", headers=READER).status_code == 403

        assert admin.put("/AccessPolicy/reader", json=ALLOW_READER).status_code == 201
        wait_until(lambda: other.get("/Patient", headers=READER).status_code == 200, FRESHNESS_BOUND)

        only_observations = {**ALLOW_READER, "engine": "matcho", "matcho": {"uri": "/Observation"}}
        assert admin.put("/AccessPolicy/reader", json=only_observations).status_code == 200
        wait_until(lambda: other.get("/Patient", headers=READER).status_code == 403, FRESHNESS_BOUND)
        assert other.get("/Observation", headers=READER).status_code == 200

        assert admin.delete("/AccessPolicy/reader").status_code == 200
        wait_until(lambda: other.get("/Observation", headers=READER).status_code == 403, FRESHNESS_BOUND)


def test_client_deactivated_on_one_server_is_refused_by_the_other_within_a_second(
    server_factory: Callable[..., ServerProcess],
) -> None:
    first, second = server_factory(), server_factory()
    with first.client(auth=ROOT) as admin, second.client() as other:
        admin.put("/Client/reader", json={"secret": "reader-secret", "grant_types": ["basic"]})
        admin.put("/AccessPolicy/reader", json=ALLOW_READER)
        wait_until(lambda: other.get("/Patient", headers=READER).status_code == 200, FRESHNESS_BOUND)
        deactivated = admin.put("/Client/reader", json={"grant_types": ["basic"], "active": False})
        assert deactivated.status_code == 200
        wait_until(lambda: other.get("/Patient", headers=READER).status_code == 401, FRESHNESS_BOUND)
