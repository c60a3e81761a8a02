"""Rules that grant rewards: a `reward` effect and a stamp card whose reward is a voucher,
through the HTTP API on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.programs.service import ProgramVersion
from trofast.programs.spec import SpecError, validate_data

Headers = dict[str, str]
Json = dict[str, Any]

PROGRAM: Json = {
    "event_types": ["review"],
    "rules": [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {
            "id": "five-visits",
            "effect": {"kind": "stamp", "card": "sample-card", "per": "activity"},
        },
        {
            "id": "thanks-for-reviewing",
            "on": "review",
            "effect": {"kind": "reward", "reward": "tote-bag"},
            "limits": {"per_member": [{"period": "ever", "times": 1}]},
        },
    ],
    "stamp_cards": [{"id": "sample-card", "name": "Samples", "stamps": 3, "reward": "sample"}],
    "rewards": [
        {"id": "sample", "type": "free_product", "name": "Free sample", "cost": 0, "sku": "SMP"},
        {"id": "tote-bag", "type": "custom", "name": "Tote bag", "cost": 0, "stock": 1},
    ],
}


@pytest.fixture
def shop(make_program: Callable[..., ProgramVersion]) -> ProgramVersion:
    return make_program(**PROGRAM)


@pytest.fixture
def pos(shop: ProgramVersion, key_for: Callable[..., Headers]) -> Headers:
    return key_for(shop, "pos")


def send(client: TestClient, pos: Headers, body: Json) -> Json:
    r = client.post("/v1/activities", headers=pos, json=body)
    assert r.status_code == 201, r.text
    return r.json()  # type: ignore[no-any-return]


def purchase(n: int, member: Json) -> Json:
    return {
        "type": "purchase",
        "external_id": f"r{n}",
        "member_id": member["id"],
        "amount": 5000,
        "currency": "SEK",
    }


def test_a_stamp_card_grants_a_voucher_every_third_visit(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    member = enrol(pos)
    answers = [send(client, pos, purchase(n, member)) for n in range(1, 7)]
    granted = [[e for e in a["effects"] if e["reward"]] for a in answers]
    assert [len(g) for g in granted] == [0, 0, 1, 0, 0, 1]
    third = granted[2][0]
    assert (third["rule"], third["reward"], third["points"]) == (
        "five-visits:sample-card",
        "sample",
        0,
    )
    vouchers = client.get(f"/v1/members/{member['id']}/vouchers", headers=pos).json()["items"]
    assert sorted(v["code"] for v in vouchers) == sorted(g[0]["voucher"] for g in granted if g)
    assert {(v["reward"], v["points"], v["status"]) for v in vouchers} == {("sample", 0, "issued")}
    # A resent purchase replays its answer, voucher included, and grants nothing more.
    again = client.post("/v1/activities", headers=pos, json=purchase(3, member)).json()
    assert again["replayed"] and again["effects"] == answers[2]["effects"]
    assert len(client.get(f"/v1/members/{member['id']}/vouchers", headers=pos).json()["items"]) == 2
    balance = client.get(f"/v1/members/{member['id']}/balance", headers=pos).json()
    assert balance["available"] == 6 * 5 and balance["stamps"] == {"sample-card": 0}


def test_a_rule_grants_a_reward_until_none_is_left(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    first, second = enrol(pos), enrol(pos)

    def review(member: Json, n: int) -> Json:
        return send(
            client,
            pos,
            {
                "type": "event",
                "external_id": f"rev{n}",
                "member_id": member["id"],
                "event_type": "review",
            },
        )

    got = review(first, 1)
    assert [(e["reward"], bool(e["voucher"])) for e in got["effects"]] == [("tote-bag", True)]
    assert review(first, 2)["effects"] == []  # once per member ever
    sold_out = review(second, 3)  # the only tote bag is gone: the review still counts
    assert [(e["reward"], e["voucher"]) for e in sold_out["effects"]] == [("tote-bag", None)]
    assert any("out_of_stock" in note for note in sold_out["notes"])


def test_granting_an_unknown_reward_is_refused_with_its_path() -> None:
    document = {"key": "grants", "name": "x", "currency": "SEK", **PROGRAM, "rewards": []}
    with pytest.raises(SpecError) as caught:
        validate_data(document)
    paths = [path for path, _ in caught.value.errors]
    assert "rules.2.effect.reward" in paths or "stamp_cards.0.reward" in paths


def test_a_batch_grants_what_one_by_one_grants(
    client: TestClient, pos: Headers, enrol: Callable[..., Json]
) -> None:
    member = enrol(pos)
    batch = [purchase(n, member) for n in range(1, 5)]
    r = client.post("/v1/activities/batch", headers=pos, json={"activities": batch})
    assert r.status_code == 200, r.text
    results = [item["result"] for item in r.json()["items"]]
    granted = [[e["reward"] for e in res["effects"] if e["reward"]] for res in results]
    assert granted == [[], [], ["sample"], []]
    vouchers = client.get(f"/v1/members/{member['id']}/vouchers", headers=pos).json()["items"]
    assert [v["code"] for v in vouchers] == [results[2]["effects"][-1]["voucher"]]
