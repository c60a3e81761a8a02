"""Paid memberships wired into activities, rules and rewards: the provider's payment event
starts the membership in the same request, rules see `member.plan`, members-only rewards
and plan perks follow the plan. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]

PROGRAM: Json = {
    "membership_plans": [
        {
            "id": "plus",
            "name": "Plus",
            "price": 14_900,
            "period": "monthly",
            "perks": ["free_shipping"],
            "rewards": ["smoothie"],
        }
    ],
    "rules": [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {
            "id": "plus-double",
            "priority": 200,
            "when": [{"field": "member.plan", "op": "eq", "value": "plus"}],
            "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]},
        },
    ],
    "rewards": [
        {"id": "smoothie", "type": "free_product", "name": "Smoothie", "cost": 10, "sku": "SM"}
    ],
}


@pytest.fixture
def pos(make_program: Callable[..., ProgramVersion], key_for: Callable[..., Headers]) -> Headers:
    return key_for(make_program(**PROGRAM), "pos")


def test_a_payment_makes_a_member_whose_rules_rewards_and_perks_follow(
    client: TestClient, pos: Headers, enrol: Callable[..., Json], problem: Callable[..., Any]
) -> None:
    member = enrol(pos)

    def buy(external_id: str) -> Json:
        body = {
            "type": "purchase",
            "external_id": external_id,
            "member_id": member["id"],
            "amount": 20_000,
            "currency": "SEK",
        }
        r = client.post("/v1/activities", headers=pos, json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    assert buy("before")["points"] == 20
    redeem = {"reward": "smoothie", "reference": "s1"}
    url = f"/v1/members/{member['id']}/redemptions"
    problem(client.post(url, headers=pos, json=redeem), 403, "not_eligible")

    payment = {
        "type": "event",
        "external_id": "psp-1",
        "member_id": member["id"],
        "event_type": "membership_payment",
        "attributes": {"plan": "plus", "reference": "inv-1", "amount": 14_900},
    }
    r = client.post("/v1/activities", headers=pos, json=payment)
    assert r.status_code == 201, r.text
    assert (r.json()["membership"]["kind"], r.json()["membership"]["plan"]) == ("started", "plus")

    assert buy("after")["points"] == 40  # the plan's double points
    assert client.post(url, headers=pos, json=redeem).status_code == 201
    perks = client.get(f"/v1/members/{member['id']}/perks", headers=pos).json()
    assert (perks["plan"], perks["plan_perks"], perks["free_shipping"]) == (
        "plus",
        ["free_shipping"],
        True,
    )
    card = {**payment, "external_id": "psp-2", "attributes": {"card": "4111111111111111"}}
    problem(client.post("/v1/activities", headers=pos, json=card), 422, "card_data_refused")
