"""Tiers wired into earning and rewards: an activity that crosses a threshold lifts the
member at once, the next activity earns at the new tier (`tier.name` rules), a batch gives
what the same activities one by one give, tier-only rewards and tier perks follow the
tier. On SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.programs.service import ProgramVersion

Headers = dict[str, str]
Json = dict[str, Any]

PROGRAM: Json = {
    "tiers": [
        {"id": "member", "name": "Member"},
        {
            "id": "silver",
            "name": "Silver",
            "threshold": {"spend": 500_000},
            "perks": ["free_shipping"],
            "welcome_points": 100,
        },
    ],
    "tier_qualification": {"metrics": ["spend"], "window": "calendar_year"},
    "rules": [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {
            "id": "silver-bonus",
            "priority": 200,
            "when": [{"field": "tier.name", "op": "eq", "value": "silver"}],
            "effect": {"kind": "multiplier", "percent": 150, "of": ["base"]},
        },
    ],
    "rewards": [
        {
            "id": "lounge",
            "type": "early_access",
            "name": "Lounge",
            "cost": 10,
            "access": "lounge",
            "eligible": {"tiers": ["silver"]},
        },
    ],
}


@pytest.fixture
def tiered(make_program: Callable[..., ProgramVersion]) -> ProgramVersion:
    return make_program(**PROGRAM)


@pytest.fixture
def pos(tiered: ProgramVersion, key_for: Callable[..., Headers]) -> Headers:
    return key_for(tiered, "pos")


def purchase(external_id: str, member: Json, amount: int) -> Json:
    return {
        "type": "purchase",
        "external_id": external_id,
        "member_id": member["id"],
        "amount": amount,
        "currency": "SEK",
    }


def test_crossing_a_threshold_lifts_the_member_for_the_next_activity(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    member = enrol(pos)
    first = client.post("/v1/activities", headers=pos, json=purchase("a1", member, 600_000))
    assert first.status_code == 201, first.text
    # Earned at the old tier (600 points), then lifted to Silver with 100 welcome points.
    body = first.json()
    assert (body["points"], body["tier"], body["new_tier"]) == (600, "member", "silver")
    second = client.post("/v1/activities", headers=pos, json=purchase("a2", member, 10_000))
    body = second.json()
    assert (body["points"], body["tier"], body["new_tier"]) == (15, "silver", None)
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 600 + 100 + 15
    tier = client.get(f"/v1/members/{member['id']}/tier", headers=pos).json()
    assert tier["tier"] == "silver"


def test_a_batch_gives_what_one_by_one_gives(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    one, other = enrol(pos), enrol(pos)
    batch = [purchase("b1", one, 600_000), purchase("b2", one, 10_000), purchase("c1", other, 1000)]
    r = client.post("/v1/activities/batch", headers=pos, json={"activities": batch})
    assert r.status_code == 200, r.text
    results = [item["result"] for item in r.json()["items"]]
    got = [(i["points"], i["tier"], i["new_tier"]) for i in results]
    assert got == [(600, "member", "silver"), (15, "silver", None), (1, "member", None)]


def test_tier_only_rewards_and_tier_perks(
    client: TestClient, pos: Headers, enrol: Callable[..., Json], problem: Callable[..., Any]
) -> None:
    member = enrol(pos)
    client.post("/v1/activities", headers=pos, json=purchase("p1", member, 100_000))
    url = f"/v1/members/{member['id']}/redemptions"
    problem(
        client.post(url, headers=pos, json={"reward": "lounge", "reference": "l1"}),
        403,
        "not_eligible",
    )
    perks = client.get(f"/v1/members/{member['id']}/perks", headers=pos).json()
    assert (perks["tier"], perks["free_shipping"]) == ("member", False)
    client.post("/v1/activities", headers=pos, json=purchase("p2", member, 400_000))
    r = client.post(url, headers=pos, json={"reward": "lounge", "reference": "l1"})
    assert r.status_code == 201, r.text
    catalogue = client.get(f"/v1/rewards?member={member['id']}", headers=pos).json()
    assert catalogue[0]["eligible"] is True
    perks = client.get(f"/v1/members/{member['id']}/perks", headers=pos).json()
    assert (perks["tier"], perks["tier_perks"], perks["free_shipping"]) == (
        "silver",
        ["free_shipping"],
        True,
    )


def test_a_resent_activity_replays_its_tier_change(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    member = enrol(pos)
    first = client.post("/v1/activities", headers=pos, json=purchase("t1", member, 600_000))
    again = client.post("/v1/activities", headers=pos, json=purchase("t1", member, 600_000))
    assert again.status_code in (200, 201), again.text
    assert again.json()["replayed"] is True
    assert again.json()["new_tier"] == first.json()["new_tier"] == "silver"
