"""Users of a company member (POST/GET/DELETE /v1/members/{ref}/users): activities name the
user who made them and earn for the company, a lookup by a user's e-mail finds the company,
scopes and tenant isolation as for every member endpoint. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from trofast.activities.models import activities
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.members.models import member_users
from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]


def order(external_id: str, company: Json, amount: int, user: str | None) -> Json:
    body: Json = {"type": "purchase", "external_id": external_id, "amount": amount,
                  "currency": "SEK", "loyalty_number": company["loyalty_number"]}  # fmt: skip
    if user is not None:
        body["user_external_id"] = user
    return body


def test_company_users_place_orders_for_the_company(
    client: TestClient,
    db: Database,
    program: ProgramVersion,
    pos: Headers,
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    read = key_for(program, "read")
    company = enrol(pos, email="inkop@bygg.example", last_name="Bygg AB", kind="company")
    person = enrol(pos)
    assert (company["kind"], person["kind"]) == ("company", "person")
    url = f"/v1/members/{company['loyalty_number']}/users"
    aino = {"external_id": "u-aino", "name": "Aino", "email": "Aino@Bygg.example", "role": "buyer"}
    r = client.post(url, headers=pos, json=aino)
    assert r.status_code == 201, r.text
    assert (r.json()["member_id"], r.json()["email"]) == (company["id"], "aino@bygg.example")
    r = client.post(url, headers=pos, json={"external_id": "u-mikael", "role": "buyer"})
    assert r.status_code == 201, r.text

    # Unique per program, one member per user, only companies have users.
    problem(client.post(url, headers=pos, json={"external_id": "u-aino"}), 409, "user_exists")
    problem(
        client.post(url, headers=pos, json={"external_id": "u-x", "email": "aino@bygg.example"}),
        409,
        "email_taken",
    )
    problem(
        client.post(f"/v1/members/{person['id']}/users", headers=pos, json={"external_id": "u-y"}),
        409,
        "not_a_company",
    )
    problem(client.post(url, headers=read, json={"external_id": "u-z"}), 403, "forbidden")
    listed = client.get(url, headers=read).json()["items"]
    assert [(u["external_id"], u["role"]) for u in listed] == [
        ("u-aino", "buyer"),
        ("u-mikael", "buyer"),
    ]

    # Each user's order earns for the company (1 point per 10 SEK): 120 + 80.
    r = client.post("/v1/activities", headers=pos, json=order("o1", company, 120_000, "u-aino"))
    assert (r.status_code, r.json()["member_id"], r.json()["points"]) == (201, company["id"], 120)
    r = client.post("/v1/activities", headers=pos, json=order("o2", company, 80_000, "u-mikael"))
    assert r.json()["points"] == 80
    # A batch names its users too.
    r = client.post(
        "/v1/activities/batch",
        headers=pos,
        json={"activities": [order("o3", company, 10_000, "u-aino"), order("o4", company, 1, "x")]},
    )
    items = r.json()["items"]
    assert items[0]["status"] == 201 and items[0]["result"]["points"] == 10
    # (The batch path runs items naming a user one by one: see activities.bulk._bulk_earning.)
    assert (items[1]["status"], items[1]["problem"]["code"]) == (422, "unknown_user"), items[1]
    balance = client.get(f"/v1/members/{company['id']}/balance", headers=read).json()
    assert balance["available"] + balance["pending"] == 210

    # A user that is not the member's, or an anonymous purchase naming a user: 422, nothing
    # stored.
    problem(
        client.post("/v1/activities", headers=pos, json={**order("o5", person, 5000, "u-aino")}),
        422,
        "unknown_user",
    )
    anonymous = {"type": "purchase", "external_id": "o6", "amount": 5000, "currency": "SEK",
                 "user_external_id": "u-aino"}  # fmt: skip
    problem(client.post("/v1/activities", headers=pos, json=anonymous), 422, "unknown_user")
    with db.read() as conn:
        stored = conn.execute(
            select(activities.c.external_id, member_users.c.external_id)
            .join(member_users, member_users.c.id == activities.c.user_id, isouter=True)
            .where(activities.c.program_id == program.program_id)
            .order_by(activities.c.id)
        ).all()
    assert [tuple(r) for r in stored] == [("o1", "u-aino"), ("o2", "u-mikael"), ("o3", "u-aino")]

    # A lookup by a user's e-mail finds the company; q finds it by a user's id as well.
    for query in ("email=aino@bygg.example", "q=AINO@bygg.example", "q=u-mikael"):
        found = client.get(f"/v1/members?{query}", headers=read).json()["items"]
        assert [m["id"] for m in found] == [company["id"]], query

    # Removing a user: it can act no more, its name and e-mail are gone, its orders stay.
    problem(client.delete(f"{url}/u-aino", headers=read), 403, "forbidden")
    assert client.delete(f"{url}/u-aino", headers=pos).status_code == 204
    problem(client.delete(f"{url}/u-aino", headers=pos), 404, "user_not_found")
    assert [u["external_id"] for u in client.get(url, headers=read).json()["items"]] == ["u-mikael"]
    assert client.get("/v1/members?email=aino@bygg.example", headers=read).json()["items"] == []
    problem(
        client.post("/v1/activities", headers=pos, json=order("o7", company, 5000, "u-aino")),
        422,
        "unknown_user",
    )
    with db.read() as conn:
        gone = conn.execute(
            select(member_users.c.name, member_users.c.email).where(
                member_users.c.program_id == program.program_id,
                member_users.c.external_id == "u-aino",
            )
        ).one()
        assert tuple(gone) == (None, None)
        assert audit(conn, program.program_id) == []
    # The same id comes back to the same company only.
    r = client.post(url, headers=pos, json={"external_id": "u-aino", "name": "Aino V."})
    assert r.status_code == 201, r.text


def test_users_are_isolated_between_programs(
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
    problem: Callable[..., Json],
) -> None:
    """Program B's admin key can neither see, add nor remove users of A's company, nor name
    them in its activities; the same external id is free in another program."""
    prog_a, prog_b = make_program(), make_program()
    a, b = key_for(prog_a, "admin"), key_for(prog_b, "admin")
    company = enrol(a, email="ab@example.com", kind="company")
    r = client.post(f"/v1/members/{company['id']}/users", headers=a, json={"external_id": "u-1"})
    assert r.status_code == 201, r.text
    for ref in (company["id"], company["loyalty_number"]):
        url = f"/v1/members/{ref}/users"
        problem(client.get(url, headers=b), 404, "member_not_found")
        problem(client.post(url, headers=b, json={"external_id": "u-2"}), 404, "member_not_found")
        problem(client.delete(f"{url}/u-1", headers=b), 404, "member_not_found")
    other = enrol(b, email="b@example.com", kind="company")
    problem(
        client.post("/v1/activities", headers=b, json=order("b1", other, 1000, "u-1")),
        422,
        "unknown_user",
    )
    r = client.post(f"/v1/members/{other['id']}/users", headers=b, json={"external_id": "u-1"})
    assert r.status_code == 201, r.text
    assert client.get("/v1/members?q=u-1", headers=b).json()["items"][0]["id"] == other["id"]
    assert (
        client.get(f"/v1/members/{company['id']}/users", headers=a).json()["items"][0]["member_id"]
        == company["id"]
    )
