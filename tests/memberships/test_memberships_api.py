"""GET /v1/members/{ref}/membership and its history, on SQLite and PostgreSQL; the payment
events arrive through POST /v1/activities and are applied by `memberships.on_event`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.testclient import TestClient

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs.service import ProgramVersion

PLANS = [
    {
        "id": "plus",
        "name": {"en": "Plus", "sv": "Plus-medlem"},
        "price": 14_900,
        "period": "monthly",
        "trial_days": 14,
        "grace_days": 7,
        "perks": ["free_shipping"],
        "earn_multiplier_percent": 150,
    }
]


def test_membership_read(
    client: TestClient,
    db: Database,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., dict[str, str]],
    enrol: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    program = make_program(membership_plans=PLANS, locales=["sv", "en"])
    pos, read = key_for(program, "pos"), key_for(program, "read")
    m = enrol(pos)
    r = client.get(f"/v1/members/{m['id']}/membership", headers=read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "none" and body["plan"] is None and body["perks"] == []
    assert not body["renews"] and body["earn_multiplier_percent"] == 100

    attributes = {"plan": "plus", "reference": "in_1", "amount": 0}
    event = {
        "type": "event",
        "external_id": "psp-1",
        "member_id": m["id"],
        "event_type": "membership_payment",
        "attributes": attributes,
    }
    r = client.post("/v1/activities", json=event, headers=pos)
    assert r.status_code == 201, r.text  # a built-in event type: accepted undeclared
    assert r.json()["membership"]["kind"] == "started"

    r = client.get(f"/v1/members/{m['loyalty_number']}/membership", headers=read)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "trial" and body["plan"] == "plus" and body["name"] == "Plus-medlem"
    assert (body["price"], body["currency"], body["period"]) == (14_900, "SEK", "monthly")
    assert body["trial_until"] == body["paid_until"] == body["renews_at"]
    assert body["paid_until"].startswith("2026-01-29T10:00:00")
    assert body["renews"] and body["perks"] == ["free_shipping"]
    assert body["earn_multiplier_percent"] == 150 and body["rewards"] == []
    r = client.get(f"/v1/members/{m['id']}/membership?locale=en", headers=read)
    assert r.json()["name"] == "Plus"

    r = client.get(f"/v1/members/{m['id']}/membership/history", headers=read)
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert (item["kind"], item["plan"], item["reference"], item["amount"]) == (
        "started",
        "plus",
        "in_1",
        0,
    )
    problem(client.get("/v1/members/999999999/membership", headers=read), 404, "member_not_found")


def test_membership_without_plans(
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., dict[str, str]],
    enrol: Callable[..., dict[str, Any]],
    problem: Callable[..., dict[str, Any]],
) -> None:
    program = make_program()
    m = enrol(key_for(program, "pos"))
    read = key_for(program, "read")
    r = client.get(f"/v1/members/{m['id']}/membership", headers=read)
    problem(r, 409, "memberships_not_enabled")
