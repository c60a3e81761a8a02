"""A member's personal data: GET /v1/members/{ref}/export and POST /v1/members/{ref}/erase
(docs/privacy.md), and `trofast member export|erase`, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import JSON, String, Text, cast, func, or_, select
from typer.testing import CliRunner

from racing import MODES, race, racing_clients
from trofast.access import service as access
from trofast.activities.models import activities
from trofast.cli import app
from trofast.kit.auth import Scope
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.ledger.models import ledger_transactions, transfers
from trofast.models import metadata
from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]

TIERS = [
    {"id": "member", "name": "Member"},
    {"id": "silver", "name": "Silver", "threshold": {"spend": 50_000}},
]
REWARDS = [
    {"id": "bun", "type": "free_product", "name": "Free bun", "cost": 30, "sku": "BUN"},
    {"id": "latte", "type": "free_product", "name": "Free latte", "cost": 20, "sku": "LATTE"},
]


def _person() -> Json:
    """What the member enrolls with: unique in the whole database (other tests share it),
    so that finding none of it after the erasure means this erasure removed it."""
    token = uuid.uuid4().hex[:10]
    return {
        "email": f"zelmira.{token}@example.se",
        "phone": f"+4670{int(token[:7], 16) % 10_000_000:07d}",
        "first_name": f"Zelmira{token}",
        "last_name": f"Quillfeather{token}",
        "birth_date": "1990-04-01",
        "locale": "sv",
        "marketing_consent": True,
        "external_id": f"crm-{token}",
        "tags": ["vip"],
    }


def _personal(person: Json) -> tuple[str, ...]:
    return tuple(person[k] for k in ("email", "phone", "first_name", "last_name", "external_id"))


TOP_LEVEL = {
    "format",
    "program",
    "exported_at",
    "member",
    "users",
    "household",
    "household_invites",
    "tier",
    "tier_history",
    "membership",
    "membership_history",
    "balance",
    "accounts",
    "ledger",
    "lots",
    "activities",
    "partner_activities",
    "vouchers",
    "counters",
    "messages",
    "erasure",
}


@pytest.fixture
def shop(
    client: TestClient,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    buy: Callable[..., Any],
) -> Json:
    """A program with tiers, rewards and 14 days' vesting; Zelmira enrolled (with an
    Idempotency-Key, so her answer is stored), in a household, silver after two purchases and
    a return, with 100 adjusted points of which 30 paid a voucher; another member beside."""
    program = make_program(tiers=TIERS, rewards=REWARDS, vesting_days=14, country="SE")
    keys = {scope: key_for(program, scope) for scope in ("admin", "pos", "read")}
    pos, admin = keys["pos"], keys["admin"]
    person = _person()
    r = client.post("/v1/members", json=person, headers={**pos, "Idempotency-Key": "enrol-zq"})
    assert r.status_code == 201, r.text
    zq = r.json()
    other = enrol(pos, email="other.member@example.se", first_name="Otto")
    buy(pos, other, 30_000)
    first = buy(pos, zq, 40_000, store="sthlm-1")
    clock.advance(timedelta(hours=1))
    buy(pos, zq, 20_000, store="sthlm-1")
    back = {"type": "return", "external_id": "ret-1", "original_external_id": first["external_id"]}
    r = client.post("/v1/activities", json={**back, "amount": 10_000}, headers=pos)
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/members/{zq['id']}/adjustments",
        json={"points": 100, "reason": "welcome gift", "reference": "gift-1"},
        headers=admin,
    )
    assert r.status_code == 201, r.text
    r = client.post(
        f"/v1/members/{zq['id']}/redemptions",
        json={"reward": "bun", "reference": "red-1"},
        headers=pos,
    )
    assert r.status_code == 201, r.text
    home = {"owner": zq["id"], "name": f"{person['last_name']} home"}
    r = client.post("/v1/households", json=home, headers=pos)
    assert r.status_code == 201, r.text
    return {
        "program": program,
        "keys": keys,
        "person": person,
        "zq": zq,
        "other": other,
        "first": first,
        "voucher": r,
    }


def _walk(value: Any) -> Iterator[Any]:
    """Every key and leaf value of decoded JSON."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from _walk(v)
    elif isinstance(value, list):
        for v in value:
            yield from _walk(v)
    else:
        yield value


def test_export_holds_everything_about_the_member_and_nothing_else(
    client: TestClient, shop: Json
) -> None:
    zq, other, admin, person = shop["zq"], shop["other"], shop["keys"]["admin"], shop["person"]
    r = client.get(f"/v1/members/{zq['loyalty_number']}/export", headers=admin)
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"] == f'attachment; filename="member-{zq["id"]}.json"'
    doc = r.json()
    assert set(doc) == TOP_LEVEL
    assert doc["format"] == "trofast.member-export/1"
    assert doc["program"] == shop["program"].spec.key
    assert doc["exported_at"] == "2026-01-15T11:00:00Z"
    assert doc["member"] == {
        "id": zq["id"],
        "loyalty_number": zq["loyalty_number"],
        "external_id": person["external_id"],
        "kind": "person",
        "status": "active",
        "email": person["email"],
        "phone": person["phone"],
        "first_name": person["first_name"],
        "last_name": person["last_name"],
        "birth_date": "1990-04-01",
        "locale": "sv",
        "tags": ["vip"],
        "channel": "api",
        "consents": {"marketing": {"given": True, "changed_at": "2026-01-15T10:00:00Z"}},
        "enrolled_at": "2026-01-15T10:00:00Z",
        "updated_at": "2026-01-15T10:00:00Z",
    }
    assert doc["users"] == []
    household = doc["household"]
    assert (household["name"], household["owner"]) == (f"{person['last_name']} home", True)
    assert doc["tier"]["tier"] == "silver"
    assert [(h["from_tier"], h["to_tier"], h["reason"]) for h in doc["tier_history"]] == [
        ("member", "silver", "upgrade")
    ]
    assert doc["membership"] is None and doc["membership_history"] == []
    # 40 + 20 pending, 10 of them returned; 100 adjusted, 30 paid the bun.
    balance = doc["balance"]
    assert (balance["available"], balance["pending"], balance["lifetime_earned"]) == (70, 50, 150)
    assert [a["unit"] for a in doc["accounts"]] == ["points"]
    kinds = [
        (t["kind"], [(x["from"], x["to"], x["amount"], x["phase"]) for x in t["transfers"]])
        for t in doc["ledger"]
    ]
    assert kinds == [
        ("earn", [("issuance", "member", 40, "pending")]),
        ("earn", [("issuance", "member", 20, "pending")]),
        (
            "return",
            [("issuance", "member", 40, "void"), ("issuance", "member", 30, "pending")],
        ),
        ("adjust", [("adjustment", "member", 100, "single")]),
        ("hold", [("member", "redemption", 30, "pending")]),
        ("redeem", [("member", "redemption", 30, "post")]),
    ]
    assert doc["ledger"][3]["reason"] == "welcome gift"
    assert [(lot["original"], lot["remaining"], lot["pending"]) for lot in doc["lots"]] == [
        (40, 30, True),
        (20, 20, True),
        (100, 70, False),
    ]
    activities = [(a["type"], a["amount"], a["points"], a["store"]) for a in doc["activities"]]
    assert activities == [
        ("purchase", 40_000, 40, "sthlm-1"),
        ("purchase", 20_000, 20, "sthlm-1"),
        ("return", 10_000, -10, "sthlm-1"),
    ]
    assert doc["activities"][0]["body"]["member_id"] == zq["id"]
    assert doc["activities"][2]["original_external_id"] == shop["first"]["external_id"]
    assert [(v["reward"], v["status"], v["points"]) for v in doc["vouchers"]] == [
        ("bun", "issued", 30)
    ]
    topics = [m["topic"] for m in doc["messages"]]
    assert topics == ["tier.changed", "reward.redeemed", "household.joined"]
    assert all(m["delivered_at"] is None for m in doc["messages"])
    assert doc["erasure"] is None
    # Nothing of the other member: no id, number, e-mail or name, no activity of theirs.
    leaves = set(_walk(doc))
    assert not leaves & {other["email"], other["loyalty_number"], "Otto"}
    text = json.dumps(doc)
    assert other["email"] not in text and other["loyalty_number"] not in text
    ids = {v for k, v in _pairs(doc) if k.endswith("member_id")}
    assert ids == {zq["id"]}


def _pairs(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield k, v
            yield from _pairs(v)
    elif isinstance(value, list):
        for v in value:
            yield from _pairs(v)


def test_export_and_erase_need_the_admin_scope_of_the_members_program(
    client: TestClient,
    shop: Json,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    problem: Callable[..., Json],
) -> None:
    zq = shop["zq"]
    stranger = key_for(make_program(), "admin")
    for scope in ("pos", "read"):
        headers = shop["keys"][scope]
        problem(client.get(f"/v1/members/{zq['id']}/export", headers=headers), 403, "forbidden")
        r = client.post(f"/v1/members/{zq['id']}/erase", json={"reason": "x"}, headers=headers)
        problem(r, 403, "forbidden")
    for ref in (zq["id"], zq["loyalty_number"]):
        problem(client.get(f"/v1/members/{ref}/export", headers=stranger), 404, "member_not_found")
        r = client.post(f"/v1/members/{ref}/erase", json={"reason": "x"}, headers=stranger)
        problem(r, 404, "member_not_found")
    r = client.post(
        f"/v1/members/{zq['id']}/erase", json={"reason": ""}, headers=shop["keys"]["admin"]
    )
    problem(r, 422, "validation_error")
    assert client.get(f"/v1/members/{zq['id']}", headers=shop["keys"]["read"]).json()["email"]


def _text_columns() -> Iterator[Any]:
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, String | Text | JSON):
                yield table, column


def _personal_left(db: Database, values: tuple[str, ...]) -> list[str]:
    """Every table.column (text and JSON, as text) holding one of `values`, in any case."""
    found = []
    with db.read() as conn:
        for table, column in _text_columns():
            text = func.lower(cast(column, Text))
            hit = or_(*(text.contains(v.lower(), autoescape=True) for v in values))
            rows = conn.execute(select(cast(column, Text)).where(hit)).scalars().all()
            found += [f"{table.name}.{column.name}: {row}" for row in rows]
    return found


def test_erasure_removes_the_personal_data_and_keeps_the_books(
    client: TestClient,
    db: Database,
    clock: FixedClock,
    shop: Json,
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    program, zq, person = shop["program"], shop["zq"], shop["person"]
    admin, pos, read = shop["keys"]["admin"], shop["keys"]["pos"], shop["keys"]["read"]
    assert _personal_left(db, _personal(person))  # the check does see them
    clock.advance(timedelta(days=1))
    r = client.post(
        f"/v1/members/{zq['loyalty_number']}/erase",
        json={"reason": "GDPR art. 17 request #12"},
        headers=admin,
    )
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer == {
        "member_id": zq["id"],
        "status": "erased",
        "erased_at": "2026-01-16T11:00:00Z",
        "reason": "GDPR art. 17 request #12",
        "erased_by": answer["erased_by"],
        "points_forfeited": 100,  # 70 left and 30 back from the cancelled voucher
        "pending_points_forfeited": 50,
        "money_forfeited": 0,
        "vouchers_cancelled": 1,
        "messages_dropped": 3,
    }
    assert answer["erased_by"].startswith("apikey:")

    assert _personal_left(db, _personal(person)) == []
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
        legs = conn.execute(select(func.count()).select_from(transfers)).scalar_one()
        kinds = conn.execute(
            select(ledger_transactions.c.kind, ledger_transactions.c.reason)
            .where(ledger_transactions.c.member_id == zq["id"])
            .order_by(ledger_transactions.c.id.desc())
            .limit(3)
        ).all()
    assert [tuple(k) for k in kinds] == [
        ("adjust", "erasure: GDPR art. 17 request #12"),
        ("return", None),
        ("refund", "voucher cancelled"),
    ]

    shell = client.get(f"/v1/members/{zq['id']}/export", headers=admin).json()
    member = shell["member"]
    assert member["status"] == "erased" and member["loyalty_number"] is None
    assert {k: member[k] for k in ("email", "phone", "first_name", "last_name", "birth_date")} == {
        k: None for k in ("email", "phone", "first_name", "last_name", "birth_date")
    }
    assert member["external_id"] is None and member["tags"] == [] and member["locale"] is None
    assert member["consents"] == {"marketing": {"given": False, "changed_at": None}}
    assert shell["household"] is None
    assert (shell["balance"]["available"], shell["balance"]["pending"]) == (0, 0)
    assert [v["status"] for v in shell["vouchers"]] == ["cancelled"]
    assert [(a["amount"], a["points"]) for a in shell["activities"]] == [
        (40_000, 40),
        (20_000, 20),
        (10_000, -10),
    ]
    assert shell["tier"]["tier"] == "silver"
    assert shell["erasure"] == {
        "loyalty_number": zq["loyalty_number"],
        "reason": "GDPR art. 17 request #12",
        "actor": answer["erased_by"],
        "points_forfeited": 100,
        "pending_points_forfeited": 50,
        "money_forfeited": 0,
        "vouchers_cancelled": 1,
        "messages_dropped": 3,
        "erased_at": "2026-01-16T11:00:00Z",
    }
    # Queued messages about her are gone; what the erasure did is announced.
    assert [m["topic"] for m in shell["messages"]] == [
        "household.left",
        "voucher.cancelled",
        "member.erased",
    ]

    # Erasing again changes nothing and answers the same.
    again = client.post(f"/v1/members/{zq['id']}/erase", json={"reason": "again"}, headers=admin)
    assert again.status_code == 200 and again.json() == answer
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(transfers)).scalar_one() == legs
    assert client.get(f"/v1/members/{zq['id']}/export", headers=admin).json() == shell
    listed = client.get("/v1/members", params={"status": "erased"}, headers=read).json()["items"]
    assert [(m["id"], m["loyalty_number"], m["email"]) for m in listed] == [(zq["id"], None, None)]

    # Nothing more can be done for her, and she is found by nothing.
    for ref in (zq["id"], zq["loyalty_number"]):
        problem(client.get(f"/v1/members/{ref}", headers=read), 410, "member_erased")
        problem(
            client.patch(f"/v1/members/{ref}", json={"locale": "en"}, headers=pos),
            410,
            "member_erased",
        )
        r = client.post(
            f"/v1/members/{ref}/spend", json={"points": 1, "reference": f"s-{ref}"}, headers=pos
        )
        problem(r, 410, "member_erased")
        r = client.post(
            f"/v1/members/{ref}/redemptions",
            json={"reward": "latte", "reference": f"x{ref}"},
            headers=pos,
        )
        problem(r, 410, "member_erased")
    by_card = {"type": "purchase", "external_id": "after-1", "amount": 10_000, "currency": "SEK"}
    r = client.post(
        "/v1/activities", json={**by_card, "loyalty_number": zq["loyalty_number"]}, headers=pos
    )
    problem(r, 404, "member_not_found")
    back = {
        "type": "return",
        "external_id": "ret-2",
        "original_external_id": shop["first"]["external_id"],
    }
    problem(client.post("/v1/activities", json=back, headers=pos), 410, "member_erased")
    for path in ("balance", "ledger", "tier", "membership", "vouchers"):
        problem(client.get(f"/v1/members/{zq['id']}/{path}", headers=read), 410, "member_erased")
    # By member id too: refused, nothing stored.
    r = client.post("/v1/activities", json={**by_card, "member_id": zq["id"]}, headers=pos)
    problem(r, 410, "member_erased")
    for query in (
        {"q": person["email"]},
        {"email": person["email"]},
        {"phone": person["phone"]},
        {"q": zq["loyalty_number"]},
        {"loyalty_number": zq["loyalty_number"]},
    ):
        r = client.get("/v1/members", params=query, headers=read)
        assert r.status_code == 200 and r.json()["items"] == [], query
    problem(
        client.patch(f"/v1/members/{zq['id']}", json={"status": "erased"}, headers=admin),
        422,
        "validation_error",
    )

    # Her e-mail and phone are free for a new enrolment, which gets a new number.
    anew = enrol(pos, email=person["email"], phone=person["phone"])
    assert anew["id"] != zq["id"] and anew["loyalty_number"] != zq["loyalty_number"]


def test_a_companys_users_and_their_orders_lose_their_personal_data(
    client: TestClient,
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
) -> None:
    token = uuid.uuid4().hex[:10]
    company = enrol(pos, email=f"inkop.{token}@bygg.example", kind="company")
    user = {
        "external_id": f"u-aino-{token}",
        "name": f"Aino {token}",
        "email": f"aino.{token}@x.se",
    }
    r = client.post(
        f"/v1/members/{company['id']}/users", json=user, headers={**pos, "Idempotency-Key": token}
    )
    assert r.status_code == 201, r.text
    order = {"type": "purchase", "external_id": f"o-{token}", "amount": 50_000, "currency": "SEK",
             "member_id": company["id"], "user_external_id": user["external_id"]}  # fmt: skip
    r = client.post("/v1/activities", json=order, headers=pos)
    assert r.status_code == 201, r.text
    doc = client.get(f"/v1/members/{company['id']}/export", headers=admin).json()
    assert [(u["external_id"], u["name"], u["email"]) for u in doc["users"]] == [
        (user["external_id"], user["name"], user["email"])
    ]
    assert doc["activities"][0]["user_external_id"] == user["external_id"]
    assert doc["activities"][0]["body"]["user_external_id"] == user["external_id"]
    personal = (company["email"], user["external_id"], user["name"], user["email"])

    r = client.post(f"/v1/members/{company['id']}/erase", json={"reason": "closed"}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["points_forfeited"] == 50
    assert _personal_left(db, personal) == []
    shell = client.get(f"/v1/members/{company['id']}/export", headers=admin).json()
    (gone,) = shell["users"]
    assert (gone["name"], gone["email"]) == (None, None) and gone["removed_at"] is not None
    assert gone["external_id"] == f"erased-{gone['id']}"
    (purchase,) = shell["activities"]
    assert purchase["user_external_id"] == gone["external_id"]
    assert purchase["body"]["user_external_id"] is None
    assert (purchase["amount"], purchase["points"]) == (50_000, 50)
    with db.read() as conn:
        assert audit(conn, program.program_id) == []
    # The user's id is free again: another company may add it.
    other = enrol(pos, kind="company")
    r = client.post(f"/v1/members/{other['id']}/users", json=user, headers=pos)
    assert r.status_code == 201, r.text


def test_cli_exports_and_erases(
    db: Database,
    tmp_path: Path,
    program: ProgramVersion,
    pos: Headers,
    enrol: Callable[..., Json],
    buy: Callable[..., Any],
) -> None:
    runner = CliRunner()
    person = _person()
    member = enrol(pos, email=person["email"], first_name=person["first_name"])
    buy(pos, member, 25_000)
    key = program.spec.key
    out = tmp_path / "export.json"
    command = ["member", "export", member["loyalty_number"], "--program", key, "--db", db.url]
    result = runner.invoke(app, [*command, "--out", str(out)])
    assert result.exit_code == 0, result.output
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["member"]["email"] == person["email"]
    assert document["balance"]["available"] == 25
    printed = runner.invoke(app, command)
    assert printed.exit_code == 0 and json.loads(printed.stdout)["member"] == document["member"]

    erase = ["member", "erase", str(member["id"]), "--program", key, "--db", db.url]
    result = runner.invoke(app, [*erase, "--reason", "GDPR request by letter"])
    assert result.exit_code == 0, result.output
    assert f"Member {member['id']} erased" in result.output
    assert "25 points and 0 pending points forfeited" in result.output
    assert _personal_left(db, (person["email"], person["first_name"])) == []
    by_id = ["member", "export", str(member["id"]), "--program", key, "--db", db.url]
    shell = json.loads(runner.invoke(app, by_id).stdout)
    assert shell["erasure"]["actor"] == "cli" and shell["member"]["status"] == "erased"
    assert runner.invoke(app, [*erase, "--reason", "again"]).exit_code == 0
    gone = runner.invoke(app, ["member", "export", "999999999", "--program", key, "--db", db.url])
    assert gone.exit_code == 1 and "No member 999999999" in gone.output
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_a_partner_gets_member_erased_for_the_card(
    client: TestClient,
    db: Database,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    hotel = {"id": "hotel", "name": "Hotell Nord", "earn": {"points": 1, "per_amount": 1000}}
    program = make_program(partners=[hotel])
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    with db.write() as conn:
        token, _ = access.create_key(
            conn, program.program_id, Scope.partner, "hotel", clock.now(), partner="hotel"
        )
    partner = {"Authorization": f"Bearer {token}"}
    member = enrol(pos, first_name="Zelmira")
    number = member["loyalty_number"]
    stay = {"external_id": "stay-1", "loyalty_number": number, "amount": 90_000, "currency": "SEK"}
    assert client.post("/v1/partner/activities", json=stay, headers=partner).status_code == 201
    r = client.post(f"/v1/members/{number}/erase", json={"reason": "request 3"}, headers=admin)
    assert r.status_code == 200 and r.json()["points_forfeited"] == 90, r.text
    problem(client.get(f"/v1/partner/members/{number}", headers=partner), 410, "member_erased")
    again = {**stay, "external_id": "stay-2"}
    r = client.post("/v1/partner/activities", json=again, headers=partner)
    problem(r, 410, "member_erased")
    doc = client.get(f"/v1/members/{number}/export", headers=admin).json()
    assert [(p["partner"], p["amount"], p["points"]) for p in doc["partner_activities"]] == [
        ("hotel", 90_000, 90)
    ]
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_a_household_goes_on_without_the_erased_member(
    client: TestClient,
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    person = _person()
    zq = enrol(pos, email=person["email"], last_name=person["last_name"])
    bo = enrol(pos)
    cilla = enrol(pos)
    r = client.post("/v1/households", json={"owner": cilla["id"], "name": "Next"}, headers=pos)
    pending = client.post(
        f"/v1/households/{r.json()['id']}/invites", json={"member": zq["id"]}, headers=pos
    )
    assert pending.status_code == 201, pending.text
    r = client.post("/v1/households", json={"owner": zq["id"], "name": "Home"}, headers=pos)
    home = r.json()
    invite = client.post(
        f"/v1/households/{home['id']}/invites", json={"member": bo["id"]}, headers=pos
    ).json()
    r = client.post(f"/v1/households/invites/{invite['token']}/accept", headers=pos)
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/members/{zq['id']}/erase", json={"reason": "request 4"}, headers=admin)
    assert r.status_code == 200, r.text
    household = client.get(f"/v1/households/{home['id']}", headers=pos).json()
    assert household["name"] == "Home"
    assert [m["member_id"] for m in household["members"]] == [bo["id"]]
    assert _personal_left(db, (person["email"], person["last_name"])) == []
    shell = client.get(f"/v1/members/{zq['id']}/export", headers=admin).json()
    left = next(m for m in shell["messages"] if m["topic"] == "household.left")
    assert left["payload"]["member_id"] == zq["id"] and left["payload"]["owner_id"] is None
    assert bo["id"] not in {v for k, v in _pairs(shell) if k.endswith("member_id")}
    assert [i["status"] for i in shell["household_invites"]] == ["revoked"]
    accept = f"/v1/households/invites/{pending.json()['token']}/accept"
    problem(client.post(accept, headers=pos), 409, "invite_not_pending")


# Apps built in threads (app_per_thread) can leak pydantic's harmless warning, as in
# test_races.py.
@pytest.mark.filterwarnings("ignore::pydantic.warnings.UnsupportedFieldAttributeWarning")
@pytest.mark.parametrize("mode", MODES)
def test_erasures_racing_spends_forfeit_exactly_what_is_left(
    mode: str,
    client: TestClient,
    db: Database,
    clock: FixedClock,
    program: ProgramVersion,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
    buy: Callable[..., Any],
) -> None:
    member = enrol(pos)
    buy(pos, member, 100_000)
    url = f"/v1/members/{member['id']}"

    def send(c: TestClient, i: int) -> Any:
        if i < 2:
            return c.post(f"{url}/erase", json={"reason": "race"}, headers=admin)
        return c.post(f"{url}/spend", json={"points": 10, "reference": f"s{i}"}, headers=pos)

    with racing_clients(mode, db, clock, client, 8) as clients:
        responses = race(clients, send)
    erasures, spends = responses[:2], responses[2:]
    assert [r.status_code for r in erasures] == [200, 200]
    assert erasures[0].json() == erasures[1].json()
    spent = [r for r in spends if r.status_code == 201]
    refused = {(r.status_code, r.json()["code"]) for r in spends if r.status_code != 201}
    assert refused <= {(410, "member_erased"), (422, "insufficient_points")}
    assert erasures[0].json()["points_forfeited"] + 10 * len(spent) == 100
    shell = client.get(f"{url}/export", headers=admin).json()
    assert (shell["balance"]["available"], shell["balance"]["pending"]) == (0, 0)
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_the_export_holds_the_stamp_cards(
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    program = make_program(
        rules=[
            {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
            {
                "id": "coffee-card",
                "lines": {"categories": ["coffee"]},
                "effect": {"kind": "stamp", "card": "kaffekort"},
            },
        ],
        stamp_cards=[{"id": "kaffekort", "name": "Kaffekort", "stamps": 10, "reward_points": 50}],
    )
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    member = enrol(pos)
    lines = [{"sku": "latte", "category": "coffee", "quantity": 3, "amount": 15_000}]
    purchase = {"type": "purchase", "external_id": "k1", "member_id": member["id"],
                "amount": 15_000, "currency": "SEK", "lines": lines}  # fmt: skip
    assert client.post("/v1/activities", json=purchase, headers=pos).status_code == 201
    doc = client.get(f"/v1/members/{member['id']}/export", headers=admin).json()
    assert [(c["key"], c["points"]) for c in doc["counters"]] == [("stamps:kaffekort", 3)]
    assert doc["activities"][0]["body"]["lines"] == [{**lines[0], "labels": []}]
    r = client.post(f"/v1/members/{member['id']}/erase", json={"reason": "r"}, headers=admin)
    assert r.status_code == 200, r.text
    shell = client.get(f"/v1/members/{member['id']}/export", headers=admin).json()
    assert shell["counters"] == doc["counters"]


def test_erasure_cancels_a_running_paid_membership(
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    plan = {"id": "plus", "name": "Plus", "price": 14_900, "period": "monthly"}
    program = make_program(membership_plans=[plan])
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    member = enrol(pos)
    paid = {"plan": "plus", "reference": "in_1", "amount": 14_900}
    event = {"type": "event", "external_id": "psp-1", "member_id": member["id"],
             "event_type": "membership_payment", "attributes": paid}  # fmt: skip
    assert client.post("/v1/activities", json=event, headers=pos).status_code == 201
    r = client.post(f"/v1/members/{member['id']}/erase", json={"reason": "r"}, headers=admin)
    assert r.status_code == 200, r.text
    shell = client.get(f"/v1/members/{member['id']}/export", headers=admin).json()
    membership = shell["membership"]
    assert membership["cancelled_at"] == "2026-01-15T10:00:00Z"
    assert membership["ends_at"] == membership["paid_until"]
    assert [h["kind"] for h in shell["membership_history"]] == ["started", "cancelled"]
    assert [m["topic"] for m in shell["messages"]] == ["membership.cancelled", "member.erased"]


def test_a_suspended_member_can_be_erased(
    client: TestClient,
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
    buy: Callable[..., Any],
) -> None:
    member = enrol(pos)
    buy(pos, member, 30_000)
    r = client.post("/v1/households", json={"owner": member["id"], "name": "Home"}, headers=pos)
    assert r.status_code == 201, r.text
    r = client.patch(f"/v1/members/{member['id']}", json={"status": "suspended"}, headers=admin)
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/members/{member['id']}/erase", json={"reason": "r"}, headers=admin)
    assert r.status_code == 200, r.text
    assert r.json()["points_forfeited"] == 30
    shell = client.get(f"/v1/members/{member['id']}/export", headers=admin).json()
    assert shell["member"]["status"] == "erased" and shell["household"] is None
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_an_erased_member_earns_nothing_more_and_nothing_is_stored(
    client: TestClient,
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
    buy: Callable[..., Any],
    problem: Callable[..., Json],
) -> None:
    """A purchase or an event naming an erased member by id is refused with 410
    `member_erased`, alone and in a batch (per item), and nothing of it is stored."""
    member, other = enrol(pos), enrol(pos)
    buy(pos, member, 10_000)
    r = client.post(f"/v1/members/{member['id']}/erase", json={"reason": "r"}, headers=admin)
    assert r.status_code == 200, r.text
    with db.read() as conn:
        stored = conn.execute(select(func.count()).select_from(activities)).scalar_one()
    purchase = {"type": "purchase", "external_id": "after", "member_id": member["id"],
                "amount": 5_000, "currency": "SEK"}  # fmt: skip
    event = {"type": "event", "external_id": "visit", "member_id": member["id"],
             "event_type": "store_visit"}  # fmt: skip
    for body in (purchase, event):
        problem(client.post("/v1/activities", json=body, headers=pos), 410, "member_erased")
    fine = {**purchase, "external_id": "fine", "member_id": other["id"]}
    r = client.post("/v1/activities/batch", json={"activities": [purchase, fine]}, headers=pos)
    assert r.status_code == 200, r.text
    first, second = r.json()["items"]
    assert (first["status"], first["problem"]["code"]) == (410, "member_erased")
    assert second["status"] == 201 and second["result"]["points"] == 5
    with db.read() as conn:
        assert conn.execute(select(func.count()).select_from(activities)).scalar_one() == (
            stored + 1
        )
