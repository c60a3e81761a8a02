"""/v1/members: enrolment, loyalty numbers, look-up by id or number, update, list, search."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from stdnum import luhn

from trofast.kit.clock import FixedClock

Headers = dict[str, str]


@pytest.fixture
def se_pos(make_program: Callable[..., Any], key_for: Callable[..., Headers]) -> Headers:
    """A pos key of a program in Sweden (national phone numbers are read as +46)."""
    return key_for(make_program(country="SE"), "pos")


def test_enrol_with_every_field(client: TestClient, se_pos: Headers) -> None:
    fields = {
        "email": "Anna.Berg@Example.COM",
        "phone": "070-123 45 67",
        "first_name": "Anna",
        "last_name": "Berg",
        "birth_date": "1990-02-03",
        "locale": "sv",
        "marketing_consent": True,
        "external_id": "crm-42",
        "channel": "store",
    }
    r = client.post("/v1/members", json=fields, headers=se_pos)
    assert r.status_code == 201, r.text
    member = r.json()
    number = member["loyalty_number"]
    assert len(number) == 12 and number.isdigit() and luhn.is_valid(number)
    expected = {**fields, "email": "anna.berg@example.com", "phone": "+46701234567"}
    assert {k: member[k] for k in expected} == expected
    assert member["status"] == "active"
    # Addressable by id and by loyalty number, with the same answer.
    by_id = client.get(f"/v1/members/{member['id']}", headers=se_pos).json()
    by_number = client.get(f"/v1/members/{number}", headers=se_pos).json()
    assert by_id == by_number == member


@pytest.mark.parametrize("contact", [{"email": "only@example.com"}, {"phone": "+4670111222"}])
def test_enrol_with_email_or_phone_alone(
    client: TestClient, pos: Headers, contact: dict[str, str]
) -> None:
    r = client.post("/v1/members", json=contact, headers=pos)
    assert r.status_code == 201, r.text
    assert r.json()["channel"] == "api" and r.json()["marketing_consent"] is False
    assert luhn.is_valid(r.json()["loyalty_number"])


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"first_name": "Nobody"}, "validation_error"),
        ({"email": None, "phone": None}, "validation_error"),
        ({"email": "not-an-email"}, "validation_error"),
        ({"email": "a@example.com", "channel": "fax"}, "validation_error"),
        ({"email": "a@example.com", "birth_date": "1990-13-01"}, "validation_error"),
        ({"email": "a@example.com", "unknown": 1}, "validation_error"),
        ({"phone": "12"}, "invalid_phone"),
    ],
)
def test_enrol_rejects_bad_input(
    client: TestClient,
    pos: Headers,
    listed: Callable[..., list[int]],
    problem: Callable[..., Any],
    body: dict[str, Any],
    code: str,
) -> None:
    problem(client.post("/v1/members", json=body, headers=pos), 422, code)
    assert listed(pos) == []


def test_enrol_with_idempotency_key(
    client: TestClient,
    pos: Headers,
    listed: Callable[..., list[int]],
    problem: Callable[..., Any],
) -> None:
    keyed = {**pos, "Idempotency-Key": "signup-1"}
    first = client.post("/v1/members", json={"email": "k@example.com"}, headers=keyed)
    again = client.post("/v1/members", json={"email": "k@example.com"}, headers=keyed)
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    assert again.headers["idempotent-replayed"] == "true"
    problem(
        client.post("/v1/members", json={"email": "other@example.com"}, headers=keyed),
        409,
        "idempotency_key_reused",
    )
    assert listed(pos) == [first.json()["id"]]


def test_duplicates_in_one_program_are_409_but_fine_across_programs(
    client: TestClient,
    make_program: Callable[..., Any],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Any],
    listed: Callable[..., list[int]],
    problem: Callable[..., Any],
) -> None:
    one, other = (key_for(make_program(country="SE"), "pos") for _ in range(2))
    first = enrol(one, email="dup@example.com", phone="+46701234567", external_id="e1")
    for body, code in [
        ({"email": "DUP@example.com"}, "email_taken"),
        ({"phone": "070-123 45 67"}, "phone_taken"),
        ({"phone": "+46 70 123 45 67", "email": "new@example.com"}, "phone_taken"),
        ({"email": "new@example.com", "external_id": "e1"}, "external_id_taken"),
    ]:
        problem(client.post("/v1/members", json=body, headers=one), 409, code)
    second = enrol(one, email="second@example.com", phone="+46709999999")
    for patch, code in [
        ({"email": "Dup@Example.com"}, "email_taken"),
        ({"phone": "0701234567"}, "phone_taken"),
    ]:
        problem(client.patch(f"/v1/members/{second['id']}", json=patch, headers=one), 409, code)
    assert client.get(f"/v1/members/{second['id']}", headers=one).json() == second
    # Only the two members exist in the first program; the same details are free elsewhere.
    assert listed(one) == [first["id"], second["id"]]
    enrol(other, email="dup@example.com", phone="+46701234567", external_id="e1")


def test_update(
    client: TestClient,
    se_pos: Headers,
    enrol: Callable[..., Any],
    problem: Callable[..., Any],
    clock: FixedClock,
) -> None:
    member = enrol(se_pos, email="u@example.com")
    clock.advance(timedelta(hours=1))
    url = f"/v1/members/{member['loyalty_number']}"
    r = client.patch(
        url,
        headers=se_pos,
        json={
            "first_name": "Ulla",
            "phone": "08-123 456 78",
            "marketing_consent": True,
            "locale": "sv",
        },
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert (updated["first_name"], updated["phone"], updated["marketing_consent"]) == (
        "Ulla",
        "+46812345678",
        True,
    )
    assert updated["email"] == "u@example.com" and updated["id"] == member["id"]
    assert updated["updated_at"] > updated["enrolled_at"] == member["enrolled_at"]
    # null clears a field; a member keeps at least one way to be reached.
    r = client.patch(url, headers=se_pos, json={"email": None})
    assert r.status_code == 200 and r.json()["email"] is None
    problem(client.patch(url, headers=se_pos, json={"phone": None}), 422, "contact_required")
    problem(
        client.patch(url, headers=se_pos, json={"marketing_consent": None}), 422, "invalid_consent"
    )
    problem(
        client.patch(url, headers=se_pos, json={"loyalty_number": "1"}), 422, "validation_error"
    )
    assert client.get(url, headers=se_pos).json() == r.json()


@pytest.mark.parametrize(
    "ref",
    [
        "999999999",
        "000000000000",
        "abc",
        "-1",
        "1.0",
        "²",
        "١٢",
        "9223372036854775808",
        "123456789012345678901234",
    ],
)
def test_unknown_member_is_404(
    client: TestClient, pos: Headers, problem: Callable[..., Any], ref: str
) -> None:
    for method, path, body in [
        ("GET", "", None),
        ("PATCH", "", {"first_name": "x"}),
        ("GET", "/balance", None),
        ("GET", "/ledger", None),
        ("POST", "/spend", {"points": 1, "reference": "r"}),
    ]:
        problem(
            client.request(method, f"/v1/members/{ref}{path}", json=body, headers=pos),
            404,
            "member_not_found",
        )


@pytest.mark.parametrize("limit", [1, 3, 7, 50])
def test_list_walks_every_page_once(
    client: TestClient, pos: Headers, enrol: Callable[..., Any], limit: int
) -> None:
    ids = [enrol(pos)["id"] for _ in range(7)]
    seen: list[int] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = client.get("/v1/members", params=params, headers=pos)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["items"]) <= limit
        seen += [m["id"] for m in page["items"]]
        pages += 1
        if pages == 2:  # a member enrolled while paging shows up at the end, not as a gap
            ids.append(enrol(pos)["id"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ids  # in order, no duplicates, no gaps
    assert pages == -(-len(ids) // limit)  # the look-ahead never yields an empty last page


def test_list_rejects_bad_paging(
    client: TestClient, pos: Headers, problem: Callable[..., Any]
) -> None:
    for cursor in (
        "garbage",
        "eyJhZnRlciI6IC0xfQ",
        "eyJhZnRlciI6IDEwMDAwMDAwMDAwMDAwMDAwMDAwMH0",
        "eyJhZnRlciI6IHRydWV9",
    ):  # not ours; {"after": -1 | 10**20 | true}
        problem(client.get(f"/v1/members?cursor={cursor}", headers=pos), 400, "invalid_cursor")
    problem(client.get("/v1/members?limit=0", headers=pos), 422, "validation_error")
    problem(client.get("/v1/members?limit=501", headers=pos), 422, "validation_error")


def test_search(
    client: TestClient,
    se_pos: Headers,
    enrol: Callable[..., Any],
    listed: Callable[..., list[int]],
    problem: Callable[..., Any],
) -> None:
    anna = enrol(se_pos, email="anna@example.com", phone="+46701234567", external_id="crm-7")
    enrol(se_pos, email="bo@example.com", phone="+46707654321")

    for params in (
        {"email": "ANNA@example.com"},
        {"phone": "070-123 45 67"},
        {"phone": "+46 70 123 45 67"},
        {"phone": "0046701234567"},
        {"loyalty_number": anna["loyalty_number"]},
        {"q": "Anna@Example.com"},
        {"q": "+46701234567"},
        {"q": "070-123 45 67"},
        {"q": anna["loyalty_number"]},
        {"q": "crm-7"},
        {"email": "anna@example.com", "phone": "0701234567"},
    ):
        assert listed(se_pos, **params) == [anna["id"]], params
    for params in (
        {"email": "nobody@example.com"},
        {"phone": "070-000 00 00"},
        {"q": "nobody"},
        {"email": "anna@example.com", "phone": "0707654321"},
    ):
        assert listed(se_pos, **params) == [], params
    problem(client.get("/v1/members", params={"phone": "12"}, headers=se_pos), 422, "invalid_phone")


def test_status_suspended_member_cannot_spend(
    client: TestClient,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Any],
    listed: Callable[..., list[int]],
    state: Callable[..., Any],
    problem: Callable[..., Any],
) -> None:
    member = enrol(pos)
    url = f"/v1/members/{member['id']}"
    client.post(
        f"{url}/adjustments",
        headers=admin,
        json={"points": 50, "reason": "welcome", "reference": "w"},
    )
    r = client.patch(url, json={"status": "suspended"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "suspended"
    assert listed(pos, status="suspended") == [member["id"]]
    assert listed(pos, status="active") == []
    before = state(admin, member["id"])
    problem(
        client.post(f"{url}/spend", json={"points": 10, "reference": "o1"}, headers=pos),
        409,
        "member_suspended",
    )
    problem(client.patch(url, json={"status": "gone"}, headers=admin), 422, "validation_error")
    assert state(admin, member["id"]) == before
    r = client.patch(url, json={"status": "active"}, headers=admin)
    assert r.status_code == 200 and r.json()["status"] == "active"
    r = client.post(f"{url}/spend", json={"points": 10, "reference": "o1"}, headers=pos)
    assert r.status_code == 201 and r.json()["available"] == 40
