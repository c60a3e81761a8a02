"""POST /v1/members/{ref}/spend and /adjustments: balance checks, idempotent references."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

Headers = dict[str, str]
Json = dict[str, Any]


@pytest.fixture
def member(client: TestClient, pos: Headers, admin: Headers, enrol: Callable[..., Json]) -> Json:
    """A member with 100 points."""
    member = enrol(pos)
    r = client.post(
        f"/v1/members/{member['id']}/adjustments",
        headers=admin,
        json={"points": 100, "reason": "welcome gift", "reference": "welcome"},
    )
    assert r.status_code == 201 and r.json()["available"] == 100, r.text
    return member


def test_spend_by_id_and_by_number(client: TestClient, pos: Headers, member: Json) -> None:
    for ref, points, left in ((member["id"], 30, 70), (member["loyalty_number"], 70, 0)):
        r = client.post(
            f"/v1/members/{ref}/spend",
            headers=pos,
            json={"points": points, "reference": f"o{points}"},
        )
        assert r.status_code == 201, r.text
        assert r.json() | {"points": -points, "available": left, "replayed": False} == r.json()


def test_insufficient_points_writes_nothing(
    client: TestClient,
    pos: Headers,
    member: Json,
    state: Callable[..., Json],
    problem: Callable[..., Any],
) -> None:
    before = state(pos, member["id"])
    body = problem(
        client.post(
            f"/v1/members/{member['id']}/spend",
            headers=pos,
            json={"points": 101, "reference": "o1"},
        ),
        422,
        "insufficient_points",
    )
    assert body["available"] == 100
    assert state(pos, member["id"]) == before
    # The reference was not used up.
    r = client.post(
        f"/v1/members/{member['id']}/spend", headers=pos, json={"points": 100, "reference": "o1"}
    )
    assert r.status_code == 201 and r.json()["available"] == 0, r.text


def test_same_reference_replays_or_conflicts(
    client: TestClient,
    pos: Headers,
    member: Json,
    state: Callable[..., Json],
    problem: Callable[..., Any],
) -> None:
    url = f"/v1/members/{member['id']}/spend"
    first = client.post(url, headers=pos, json={"points": 40, "reference": "order-9"}).json()
    before = state(pos, member["id"])
    again = client.post(
        f"/v1/members/{member['loyalty_number']}/spend",
        headers=pos,
        json={"points": 40, "reference": "order-9"},
    )
    assert again.status_code in (200, 201), again.text
    assert again.json() == {**first, "replayed": True}
    problem(
        client.post(url, headers=pos, json={"points": 41, "reference": "order-9"}),
        409,
        "reference_reused",
    )
    assert state(pos, member["id"]) == before
    assert before["balance"]["available"] == 60


def test_spend_idempotency_key(
    client: TestClient,
    pos: Headers,
    member: Json,
    available: Callable[..., int],
    problem: Callable[..., Any],
) -> None:
    url, keyed = f"/v1/members/{member['id']}/spend", {**pos, "Idempotency-Key": "k-1"}
    first = client.post(url, headers=keyed, json={"points": 10, "reference": "a"})
    again = client.post(url, headers=keyed, json={"points": 10, "reference": "a"})
    assert (
        (again.status_code, again.json())
        == (first.status_code, first.json())
        == (201, {**first.json(), "replayed": False})
    )
    assert again.headers["idempotent-replayed"] == "true"
    problem(
        client.post(url, headers=keyed, json={"points": 10, "reference": "b"}),
        409,
        "idempotency_key_reused",
    )
    assert available(pos, member["id"]) == 90


@pytest.mark.parametrize(
    "body",
    [
        {"points": 0, "reference": "x"},
        {"points": -5, "reference": "x"},
        {"points": 5},
        {"points": 5, "reference": ""},
        {"points": "5x", "reference": "x"},
        {"points": 5, "reference": "x", "extra": 1},
        {"points": 10**13, "reference": "x"},
    ],
)
def test_spend_validation(
    client: TestClient,
    pos: Headers,
    member: Json,
    available: Callable[..., int],
    problem: Callable[..., Any],
    body: Json,
) -> None:
    problem(
        client.post(f"/v1/members/{member['id']}/spend", headers=pos, json=body),
        422,
        "validation_error",
    )
    assert available(pos, member["id"]) == 100


def test_adjustments(
    client: TestClient,
    admin: Headers,
    member: Json,
    state: Callable[..., Json],
    problem: Callable[..., Any],
) -> None:
    url = f"/v1/members/{member['id']}/adjustments"
    r = client.post(url, headers=admin, json={"points": -30, "reason": "double", "reference": "c1"})
    assert r.status_code == 201 and r.json()["available"] == 70, r.text
    r = client.post(url, headers=admin, json={"points": -30, "reason": "double", "reference": "c1"})
    assert r.json()["replayed"] is True and r.json()["available"] == 70
    before = state(admin, member["id"])
    for body, status, code in [
        ({"points": 0, "reason": "nothing", "reference": "c2"}, 422, "zero_adjustment"),
        ({"points": -71, "reason": "too much", "reference": "c2"}, 422, "insufficient_points"),
        ({"points": 10**30, "reason": "overflow", "reference": "c2"}, 422, "validation_error"),
        ({"points": 5, "reason": "", "reference": "c2"}, 422, "validation_error"),
        ({"points": 5, "reason": "other reason", "reference": "c1"}, 409, "reference_reused"),
    ]:
        problem(client.post(url, headers=admin, json=body), status, code)
    assert state(admin, member["id"]) == before
    assert [(e["points"], e["reason"]) for e in before["ledger"]["items"]] == [
        (-30, "double"),
        (100, "welcome gift"),
    ]
