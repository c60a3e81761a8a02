"""The same engine runs an employee recognition programme (examples/employee-recognition.yaml)
and a B2B distributor program whose members are companies with several buyers
(examples/b2b-distributor.yaml): both files applied as they are (under a key of the test's
own), driven through the HTTP API on SQLite and PostgreSQL. Every number is worked out in the
comment above it."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import parse_document

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
Headers = dict[str, str]
Json = dict[str, Any]
_serial = itertools.count(1)


def apply_example(db: Database, clock: FixedClock, name: str) -> ProgramVersion:
    spec = parse_document((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))
    # The test databases are shared: apply under a key of this test's own.
    mine = spec.model_copy(update={"key": f"ex-{uuid.uuid4().hex[:20]}"})
    with db.write() as conn:
        return programs.apply(conn, mine, clock.now())


def enrol(client: TestClient, pos: Headers, **fields: Any) -> Json:
    fields.setdefault("email", f"eb{next(_serial)}@example.com")
    r = client.post("/v1/members", json=fields, headers=pos)
    assert r.status_code == 201, r.text
    member: Json = r.json()
    return member


def send(client: TestClient, pos: Headers, activity: Json) -> Json:
    r = client.post("/v1/activities", json=activity, headers=pos)
    assert r.status_code in (200, 201), r.text
    result: Json = r.json()
    return result


def balance(client: TestClient, pos: Headers, member: Json) -> Json:
    r = client.get(f"/v1/members/{member['loyalty_number']}/balance", headers=pos)
    assert r.status_code == 200, r.text
    body: Json = r.json()
    return body


def sound(db: Database, program: ProgramVersion) -> None:
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


# -- employee recognition ---------------------------------------------------------------------


def test_employee_recognitions_milestones_and_a_gift_card(
    client: TestClient, db: Database, clock: FixedClock, key_for: Callable[..., Headers]
) -> None:
    program = apply_example(db, clock, "employee-recognition")
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    employee = enrol(client, pos, first_name="Ebba", last_name="Nyström", external_id="E2071")

    def event(event_type: str, external_id: str, **attributes: Any) -> Json:
        return send(
            client,
            pos,
            {
                "type": "event",
                "event_type": event_type,
                "external_id": external_id,
                "member_id": employee["id"],
                "attributes": attributes,
            },
        )

    # Onboarding: 100 once ever.
    assert event("onboarding_completed", "onboard-E2071")["points"] == 100
    assert event("onboarding_completed", "onboard-E2071-again")["points"] == 0

    # Colleagues' recognitions in January: 10 each up to 40 a month; the fifth earns nothing.
    earned = [
        event("recognition_received", f"kudos-{n}", from_role="colleague", given_by=f"E{n}")
        for n in range(1, 6)
    ]
    assert [e["points"] for e in earned] == [10, 10, 10, 10, 0]
    assert "capped per month" in " ".join(earned[4]["notes"])
    # Managers' recognitions: 50, twice a month.
    bosses = [
        event("recognition_received", f"kudos-m{n}", from_role="manager", given_by="E0007")
        for n in range(1, 4)
    ]
    assert [e["points"] for e in bosses] == [50, 50, 0]
    assert "already 2 time(s) this month" in " ".join(bosses[2]["notes"])

    # A project milestone pays 150 once: HR resending it (same external_id) replays.
    first = event(
        "project_milestone", "milestone-P17-golive-E2071", project="P17", milestone="golive"
    )
    again = event(
        "project_milestone", "milestone-P17-golive-E2071", project="P17", milestone="golive"
    )
    assert (first["points"], first["replayed"]) == (150, False)
    assert (again["points"], again["replayed"]) == (150, True)

    # A fifth work anniversary: 250 + the round-year 1 000; a second one this year: nothing.
    fifth = event("work_anniversary", "anniversary-E2071-2026", years=5)
    assert {e["rule"]: e["points"] for e in fifth["effects"]} == {
        "anniversary": 250,
        "anniversary-round": 1000,
    }
    assert event("work_anniversary", "anniversary-E2071-2026-dup", years=5)["points"] == 0

    # 100 + 40 + 100 + 150 + 1250 = 1640, spendable at once (no vesting).
    figures = balance(client, pos, employee)
    assert (figures["available"], figures["pending"]) == (1640, 0)

    # February: the colleague cap starts again.
    clock.advance(timedelta(days=20))  # 4 February 2026
    assert event("recognition_received", "kudos-6", from_role="colleague")["points"] == 10
    assert balance(client, pos, employee)["available"] == 1650

    # A 250 SEK gift card: refused while its pool is empty, then the first imported code.
    url = f"/v1/members/{employee['id']}/redemptions"
    r = client.post(url, headers=pos, json={"reward": "presentkort-250", "reference": "gc-0"})
    assert (r.status_code, r.json()["code"]) == (409, "out_of_stock")
    r = client.post(
        "/v1/gift-code-pools/gc-250/codes",
        headers=admin,
        json={"codes": ["TACK-250-0001", "TACK-250-0002"]},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["added"], r.json()["available"]) == (2, 2)
    r = client.post(url, headers=pos, json={"reward": "presentkort-250", "reference": "gc-1"})
    assert r.status_code == 201, r.text
    assert r.json()["gift_card_code"] == "TACK-250-0001"
    assert balance(client, pos, employee)["available"] == 1650 - 250
    pools = {
        p["pool"]: p["available"] for p in client.get("/v1/gift-code-pools", headers=pos).json()
    }
    assert pools["gc-250"] == 1
    # The 500 SEK card's pool is still empty.
    r = client.post(url, headers=pos, json={"reward": "presentkort-500", "reference": "gc-2"})
    assert (r.status_code, r.json()["code"]) == (409, "out_of_stock")

    # A donation (100 points) and the extra day off (1 500 points, only 1 300 left).
    r = client.post(
        url, headers=pos, json={"reward": "donation-lakare-utan-granser", "reference": "d-1"}
    )
    assert (r.status_code, r.json()["status"]) == (201, "used")
    assert balance(client, pos, employee)["available"] == 1300
    r = client.post(url, headers=pos, json={"reward": "extra-ledig-dag", "reference": "day-1"})
    assert (r.status_code, r.json()["code"]) == (422, "insufficient_points")
    sound(db, program)


# -- B2B distributor: a company with two users ------------------------------------------------


def test_b2b_company_with_two_users_reaches_the_quarter_targets(
    client: TestClient, db: Database, clock: FixedClock, key_for: Callable[..., Headers]
) -> None:
    program = apply_example(db, clock, "b2b-distributor")
    pos = key_for(program, "pos")
    # The company is the member (kind company); its buyers are its users.
    company = enrol(
        client,
        pos,
        last_name="Lämpö & Putki Oy",
        external_id="C-310",
        email="osto@lampoputki.example",
        kind="company",
    )
    users = f"/v1/members/{company['loyalty_number']}/users"
    for buyer in (
        {"external_id": "C-310-aino", "name": "Aino", "email": "aino@lampoputki.example"},
        {"external_id": "C-310-mikael", "name": "Mikael", "role": "buyer"},
    ):
        r = client.post(users, headers=pos, json=buyer)
        assert r.status_code == 201, r.text

    def order(external_id: str, amount: int, buyer: str) -> Json:
        return send(
            client,
            pos,
            {
                "type": "purchase",
                "external_id": external_id,
                "loyalty_number": company["loyalty_number"],
                "user_external_id": f"C-310-{buyer}",
                "amount": amount,
                "currency": "EUR",
                "channel": "online",
                "lines": [{"sku": "FIT-22MM-BOX", "category": "fittings", "amount": amount}],
            },
        )

    def earned(answer: Json) -> tuple[dict[str, int], int, str, str | None]:
        points = {e["rule"]: e["points"] for e in answer["effects"] if e["points"]}
        return points, answer["cashback"], answer["tier"], answer["new_tier"]

    # Aino, 1 000 EUR of fittings as a Partner (100 %): base 10 points; below the 5 000 EUR
    # rebate minimum.
    assert earned(order("SO-4416", 100_000, "aino")) == ({"base": 10}, 0, "partner", None)
    # Aino, 15 000 EUR: 150 points, 1 % rebate = 15 000 cents.
    assert earned(order("SO-4417", 1_500_000, "aino")) == ({"base": 150}, 15_000, "partner", None)
    # Mikael, 12 000 EUR. The company's quarter now holds 28 000 EUR >= the 25 000 EUR Silver
    # target: up at once; this order still earns at the Partner tier.
    mikael = order("SO-4418", 1_200_000, "mikael")
    assert earned(mikael) == ({"base": 120}, 12_000, "partner", "silver")
    clock.advance(timedelta(hours=2))
    # The same 1 000 EUR order by Aino as Silver (125 %): base 10 + tier-boost 2 (2.5 down).
    assert earned(order("SO-4420", 100_000, "aino")) == (
        {"base": 10, "tier-boost": 2},
        0,
        "silver",
        None,
    )
    # Mikael, 47 000 EUR as Silver: base 470 + 117 (117.5 down); the 2 % volume rebate =
    # 94 000 cents. The quarter holds 76 000 EUR >= 75 000: Gold from the next order on.
    big = order("SO-4421", 4_700_000, "mikael")
    assert earned(big) == ({"base": 470, "tier-boost": 117}, 94_000, "silver", "gold")
    assert "tier-boost: tier silver: 125 %" in big["notes"]
    # And 1 000 EUR by Aino as Gold (150 %): base 10 + tier-boost 5.
    assert earned(order("SO-4422", 100_000, "aino")) == (
        {"base": 10, "tier-boost": 5},
        0,
        "gold",
        None,
    )

    # Both users' orders earned for the company: 10 + 150 + 120 + 12 + 587 + 15 = 894 points
    # pending (45 vesting days); the target bonuses (Silver 2 500, Gold 7 500 welcome points)
    # available at once; 15 000 + 12 000 + 94 000 cents of rebates pending in the wallet.
    figures = balance(client, pos, company)
    assert (figures["available"], figures["pending"], figures["lifetime_earned"]) == (
        10_000,
        894,
        10_894,
    )
    assert (figures["wallet"]["available"], figures["wallet"]["pending"]) == (0, 121_000)

    # The quarter's target is the company's: 77 000 EUR spent by its two users.
    r = client.get(f"/v1/members/{company['loyalty_number']}/tier", headers=pos)
    assert r.status_code == 200, r.text
    tier = r.json()
    assert (tier["tier"], tier["metrics"], tier["earn_multiplier_percent"]) == (
        "gold",
        {"spend": 7_700_000},
        150,
    )
    assert tier["next"] is None
    history = client.get(f"/v1/members/{company['id']}/tier/history", headers=pos).json()
    assert [(h["from_tier"], h["to_tier"], h["reason"]) for h in history["items"]] == [
        ("silver", "gold", "upgrade"),
        ("partner", "silver", "upgrade"),
    ]
    # A buyer's e-mail finds the company.
    found = client.get("/v1/members?email=aino@lampoputki.example", headers=pos).json()["items"]
    assert [m["id"] for m in found] == [company["id"]]
    sound(db, program)
