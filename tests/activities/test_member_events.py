"""Events Trofast notices itself (signup, profile completed, birthday), and the wallet."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from fastapi.testclient import TestClient

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion
from trofast.worker.jobs import grant_birthdays

RULES = {
    "rules": [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {"id": "welcome", "on": "signup", "effect": {"kind": "fixed", "points": 50}},
        {"id": "profile", "on": "profile_completed", "effect": {"kind": "fixed", "points": 20}},
        {
            "id": "birthday",
            "on": "birthday",
            "effect": {"kind": "fixed", "points": 100},
            "limits": {"per_member": [{"period": "year", "times": 1}]},
        },
        {"id": "cash", "effect": {"kind": "cashback", "basis_points": 200}},
        {
            "id": "coffee",
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "stamp", "card": "coffee"},
        },
    ],
    "stamp_cards": [{"id": "coffee", "name": "Kaffekort", "stamps": 5, "reward_points": 30}],
}


def test_signup_profile_birthday_wallet_and_stamps(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
    clock: FixedClock,
    db: Database,
) -> None:
    program = make_program(**RULES)
    pos = key_for(program, "pos")
    # Born on 17 January; the clock stands at 15 January 2026.
    member = client.post(
        "/v1/members", json={"email": "e@example.com", "birth_date": "1990-01-17"}, headers=pos
    ).json()
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 50  # welcome only: the profile is not complete
    client.patch(
        f"/v1/members/{member['id']}",
        json={"first_name": "Eva", "last_name": "Ek", "phone": "+46701234567"},
        headers=pos,
    )
    client.patch(f"/v1/members/{member['id']}", json={"locale": "sv"}, headers=pos)
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 70  # profile bonus once, not on the second update

    purchase = {
        "type": "purchase",
        "external_id": "k1",
        "member_id": member["id"],
        "amount": 30000,
        "currency": "SEK",
        "lines": [
            {"sku": "latte", "category": "coffee", "quantity": 6, "amount": 24000},
            {"sku": "bun", "category": "bakery", "quantity": 1, "amount": 6000},
        ],
    }
    answer = client.post("/v1/activities", json=purchase, headers=pos).json()
    assert (answer["points"], answer["cashback"]) == (30 + 30, 600)  # 300 SEK, card filled once
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["stamps"] == {"coffee": 1}
    assert balance["wallet"] == {"currency": "SEK", "available": 600, "pending": 0}

    spent = client.post(
        f"/v1/members/{member['id']}/spend",
        json={"points": 500, "reference": "till-1", "unit": "money"},
        headers=pos,
    )
    assert spent.status_code == 201 and spent.json()["available"] == 100
    too_much = client.post(
        f"/v1/members/{member['id']}/spend",
        json={"points": 101, "reference": "till-2", "unit": "money"},
        headers=pos,
    )
    assert too_much.json()["code"] == "insufficient_funds"

    clock.set(datetime(2026, 1, 18, 6, 0, tzinfo=UTC))
    mine = [program.program_id]  # other tests' programs share the database
    assert grant_birthdays(db, clock, mine) == 1
    assert grant_birthdays(db, clock, mine) == 0  # once a year, however often the job runs
    clock.advance(timedelta(days=30))
    assert grant_birthdays(db, clock, mine) == 0
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 70 + 60 + 100
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_dry_run_writes_nothing(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
) -> None:
    program = make_program(**RULES)
    pos = key_for(program, "pos")
    member = client.post("/v1/members", json={"email": "d@example.com"}, headers=pos).json()
    purchase = {
        "type": "purchase",
        "external_id": "dry-1",
        "member_id": member["id"],
        "amount": 10000,
        "currency": "SEK",
    }
    dry = client.post("/v1/activities?dry_run=true", json=purchase, headers=pos).json()
    assert dry["dry_run"] is True and dry["points"] == 10 and dry["cashback"] == 200
    assert [e["rule"] for e in dry["effects"]] == ["base", "cash"]
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 50 and balance["wallet"] is None
    real = client.post("/v1/activities", json=purchase, headers=pos)
    assert real.status_code == 201 and real.json()["replayed"] is False


def test_a_mistyped_loyalty_number_is_caught_by_its_check_digit(
    client: TestClient, pos: dict[str, str]
) -> None:
    member = client.post("/v1/members", json={"email": "t@example.com"}, headers=pos).json()
    number = member["loyalty_number"]
    typo = number[:-1] + str((int(number[-1]) + 1) % 10)
    assert client.get(f"/v1/members/{typo}", headers=pos).json()["code"] == (
        "invalid_loyalty_number"
    )
    purchase = {
        "type": "purchase",
        "external_id": "t1",
        "loyalty_number": typo,
        "amount": 1000,
        "currency": "SEK",
    }
    single = client.post("/v1/activities", json=purchase, headers=pos)
    batch = client.post("/v1/activities/batch", json={"activities": [purchase]}, headers=pos)
    assert single.status_code == 422 and single.json()["code"] == "invalid_loyalty_number"
    assert batch.json()["items"][0]["problem"]["code"] == "invalid_loyalty_number"


def test_member_tags_drive_personal_offers(
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], dict[str, str]],
    client: TestClient,
) -> None:
    program = make_program(
        rules=[
            {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
            {
                "id": "organic-offer",
                "priority": 200,
                "when": [{"field": "member.tags", "op": "contains", "value": "organic-fan"}],
                "effect": {"kind": "multiplier", "percent": 300, "of": ["base"]},
            },
        ]
    )
    pos = key_for(program, "pos")
    fan = client.post(
        "/v1/members", json={"email": "o@example.com", "tags": ["organic-fan"]}, headers=pos
    ).json()
    other = client.post("/v1/members", json={"email": "p@example.com"}, headers=pos).json()
    assert fan["tags"] == ["organic-fan"] and other["tags"] == []

    def earn(member_id: int, external_id: str) -> int:
        body = {
            "type": "purchase",
            "external_id": external_id,
            "member_id": member_id,
            "amount": 10000,
            "currency": "SEK",
        }
        return int(client.post("/v1/activities", json=body, headers=pos).json()["points"])

    assert (earn(fan["id"], "o1"), earn(other["id"], "p1")) == (30, 10)
    client.patch(f"/v1/members/{other['id']}", json={"tags": ["organic-fan"]}, headers=pos)
    assert earn(other["id"], "p2") == 30
