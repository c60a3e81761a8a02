"""The rewards catalogue, redemptions, vouchers at the checkout, gift-card pools, donations,
perks and paying with points, through the HTTP API on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion
from trofast.rewards.models import vouchers
from trofast.worker import jobs

Headers = dict[str, str]
Json = dict[str, Any]

CATALOGUE: list[Json] = [
    {
        "id": "fifty-off",
        "type": "discount",
        "name": {"sv": "50 kr rabatt", "en": "50 SEK off"},
        "cost": 100,
        "amount": 5000,
        "min_order": 20000,
        "valid_days": 30,
    },
    {
        "id": "ten-percent-coffee",
        "type": "discount",
        "name": "10 % off coffee beans",
        "cost": 50,
        "percent": 10,
        "max_discount": 3000,
        "scope": {"categories": ["beans"]},
    },
    {"id": "free-bun", "type": "free_product", "name": "Free bun", "cost": 30, "sku": "BUN"},
    {
        "id": "gift-500",
        "type": "gift_card",
        "name": "Gift card 500 SEK",
        "cost": 200,
        "value": 50000,
        "pool": "gc500",
        "low_stock": 1,
    },
    {"id": "free-shipping", "type": "free_shipping", "name": "Free shipping", "cost": 20},
    {
        "id": "spring-preview",
        "type": "early_access",
        "name": "Spring preview",
        "cost": 10,
        "access": "spring-2026",
        "valid_days": 14,
    },
    {
        "id": "tasting",
        "type": "event",
        "name": "Coffee tasting",
        "cost": 10,
        "event": "Tasting at Kungsgatan",
        "stock": 10,
    },
    {"id": "vip-line", "type": "service_perk", "name": "VIP line", "cost": 10, "perk": "vip"},
    {
        "id": "plant-a-tree",
        "type": "donation",
        "name": "Plant a tree",
        "cost": 40,
        "cause": "vi-skogen",
        "amount": 2000,
    },
    {"id": "cash-20", "type": "cashback", "name": "20 SEK credit", "cost": 150, "amount": 2000},
    {"id": "mug", "type": "custom", "name": "A mug", "cost": 60, "attributes": {"sku": "MUG"}},
    {
        "id": "members-only",
        "type": "discount",
        "name": "Club discount",
        "cost": 10,
        "amount": 1000,
        "eligible": {"tags": ["club"]},
        "limit": {"count": 1, "per": "month"},
    },
    {"id": "welcome-gift", "type": "free_product", "name": "Welcome", "cost": 0, "sku": "BUN"},
]


@pytest.fixture
def shop(make_program: Callable[..., ProgramVersion]) -> ProgramVersion:
    return make_program(
        locales=["sv", "en"],
        point_value=1000,  # one point is worth 10 öre
        rewards=CATALOGUE,
        pay_with_points={"enabled": True, "max_share_percent": 50},
    )


@pytest.fixture
def pos(shop: ProgramVersion, key_for: Callable[..., Headers]) -> Headers:
    return key_for(shop, "pos")


@pytest.fixture
def admin(shop: ProgramVersion, key_for: Callable[..., Headers]) -> Headers:
    return key_for(shop, "admin")


@pytest.fixture
def rich(client: TestClient, pos: Headers, admin: Headers, enrol: Callable[..., Json]) -> Json:
    """A member with 1,000 points."""
    member = enrol(pos)
    give(client, admin, member, 1000, "start")
    return member


def give(client: TestClient, admin: Headers, member: Json, points: int, ref: str) -> None:
    r = client.post(
        f"/v1/members/{member['id']}/adjustments",
        headers=admin,
        json={"points": points, "reason": "test points", "reference": ref},
    )
    assert r.status_code == 201, r.text


def redeem(client: TestClient, pos: Headers, member: Json, reward: str, ref: str) -> Json:
    r = client.post(
        f"/v1/members/{member['id']}/redemptions",
        headers=pos,
        json={"reward": reward, "reference": ref},
    )
    assert r.status_code == 201, r.text
    body: Json = r.json()
    return body


def available(client: TestClient, pos: Headers, member: Json) -> int:
    r = client.get(f"/v1/members/{member['id']}/balance", headers=pos)
    assert r.status_code == 200, r.text
    return int(r.json()["available"])


def sound(db: Database, shop: ProgramVersion) -> None:
    with db.read() as conn:
        assert audit(conn, shop.program_id) == []


# -- the catalogue ----------------------------------------------------------------------------


def test_the_catalogue_in_the_members_language_with_eligibility(
    client: TestClient, pos: Headers, enrol: Callable[..., Json], admin: Headers
) -> None:
    member = enrol(pos)
    give(client, admin, member, 60, "some")
    r = client.get(f"/v1/rewards?locale=en&member={member['loyalty_number']}", headers=pos)
    assert r.status_code == 200, r.text
    by_id = {item["id"]: item for item in r.json()}
    assert len(by_id) == len(CATALOGUE)
    assert by_id["fifty-off"]["name"] == "50 SEK off"
    assert by_id["fifty-off"]["details"] == {
        "amount": 5000,
        "percent": None,
        "min_order": 20000,
        "max_discount": None,
        "scope": {"skus": [], "categories": []},
    }
    assert (by_id["fifty-off"]["affordable"], by_id["mug"]["affordable"]) == (False, True)
    assert (by_id["members-only"]["eligible"], by_id["mug"]["eligible"]) == (False, True)
    assert by_id["tasting"]["stock_left"] == 10
    assert client.get("/v1/rewards/fifty-off?locale=sv", headers=pos).json()["name"] == (
        "50 kr rabatt"
    )


def test_rewards_are_edited_through_the_api_as_new_program_versions(
    client: TestClient, pos: Headers, admin: Headers, problem: Callable[..., Any]
) -> None:
    new = {"type": "discount", "name": "5 SEK off", "cost": 10, "amount": 500}
    r = client.put("/v1/rewards/five-off", headers=admin, json=new)
    assert r.status_code == 200, r.text
    version = r.json()["version"]
    assert client.get("/v1/rewards/five-off", headers=pos).json()["cost"] == 10
    body = problem(
        client.put("/v1/rewards/broken", headers=admin, json={"type": "discount", "cost": 1}),
        422,
        "invalid_reward",
    )
    assert any(e["path"].endswith("name") for e in body["errors"])
    r = client.delete("/v1/rewards/five-off", headers=admin)
    assert r.status_code == 200 and r.json()["version"] == version + 1
    problem(client.get("/v1/rewards/five-off", headers=pos), 404, "reward_not_found")
    problem(client.put("/v1/rewards/x1", headers=pos, json=new), 403, "forbidden")


# -- redeeming --------------------------------------------------------------------------------


def test_redeeming_a_discount_voucher_and_using_it_at_the_till(
    client: TestClient, pos: Headers, rich: Json, db: Database, shop: ProgramVersion
) -> None:
    voucher = redeem(client, pos, rich, "fifty-off", "order-1")
    assert re.fullmatch(
        r"TF-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}-[2-9A-HJKMNP-Z]{4}", voucher["code"]
    )
    assert (voucher["status"], voucher["points"], voucher["name"]) == (
        "issued",
        100,
        "50 kr rabatt",
    )
    assert voucher["expires_at"].startswith("2026-02-14")
    assert available(client, pos, rich) == 900
    # The same reference replays the same voucher and spends nothing more.
    again = redeem(client, pos, rich, "fifty-off", "order-1")
    assert (again["code"], again["replayed"]) == (voucher["code"], True)
    assert available(client, pos, rich) == 900

    code = voucher["code"]
    small = {"basket": {"amount": 10000, "currency": "SEK"}}
    r = client.post(f"/v1/vouchers/{code}/validate", headers=pos, json=small)
    assert r.json() | {"valid": False, "reason": "below_min_order", "discount": 0} == r.json()
    big = {"basket": {"amount": 25000, "currency": "SEK"}}
    r = client.post(f"/v1/vouchers/{code}/validate", headers=pos, json=big)
    assert (r.json()["valid"], r.json()["discount"]) == (True, 5000)

    use = {"purchase_external_id": "receipt-9", **big}
    r = client.post(f"/v1/vouchers/{code.lower()}/consume", headers=pos, json=use)
    assert r.status_code == 200, r.text
    assert (r.json()["discount"], r.json()["voucher"]["status"]) == (5000, "used")
    assert r.json()["voucher"]["used_by"] == "receipt-9"
    # The same purchase again replays; another purchase is refused.
    r = client.post(f"/v1/vouchers/{code}/consume", headers=pos, json=use)
    assert r.status_code == 200 and r.json()["voucher"]["replayed"] is True
    other = {"purchase_external_id": "receipt-10"}
    r = client.post(f"/v1/vouchers/{code}/consume", headers=pos, json=other)
    assert (r.status_code, r.json()["code"]) == (409, "voucher_used")
    sound(db, shop)


def test_percent_and_product_vouchers_price_the_basket(
    client: TestClient, pos: Headers, rich: Json
) -> None:
    beans = redeem(client, pos, rich, "ten-percent-coffee", "b1")["code"]
    bun = redeem(client, pos, rich, "free-bun", "f1")["code"]
    basket = {
        "amount": 62000,
        "lines": [
            {"sku": "BEANS-1", "category": "beans", "amount": 45000, "quantity": 1},
            {"sku": "BUN", "category": "bakery", "amount": 7000, "quantity": 2},
            {"sku": "CUP", "category": "gear", "amount": 10000},
        ],
    }
    r = client.post(f"/v1/vouchers/{beans}/validate", headers=pos, json={"basket": basket})
    assert r.json()["discount"] == 3000  # 10 % of 450.00 is 45.00, capped at 30.00
    r = client.post(f"/v1/vouchers/{bun}/validate", headers=pos, json={"basket": basket})
    assert r.json()["discount"] == 3500  # one bun of two
    no_bun = {"amount": 10000, "lines": [{"sku": "CUP", "amount": 10000}]}
    r = client.post(f"/v1/vouchers/{bun}/validate", headers=pos, json={"basket": no_bun})
    assert (r.json()["valid"], r.json()["reason"]) == (False, "product_not_in_basket")
    r = client.post(f"/v1/vouchers/{beans}/validate", headers=pos, json={"basket": no_bun})
    assert r.json()["reason"] == "no_qualifying_lines"
    r = client.post(
        f"/v1/vouchers/{bun}/consume",
        headers=pos,
        json={"purchase_external_id": "r1", "basket": no_bun},
    )
    assert (r.status_code, r.json()["code"]) == (422, "product_not_in_basket")


def test_refusals_write_nothing(
    client: TestClient,
    pos: Headers,
    enrol: Callable[..., Json],
    admin: Headers,
    problem: Callable[..., Any],
) -> None:
    poor = enrol(pos)
    give(client, admin, poor, 50, "a-little")
    url = f"/v1/members/{poor['id']}/redemptions"
    body = problem(
        client.post(url, headers=pos, json={"reward": "fifty-off", "reference": "x"}),
        422,
        "insufficient_points",
    )
    assert body["available"] == 50
    problem(
        client.post(url, headers=pos, json={"reward": "nope", "reference": "x"}),
        404,
        "reward_not_found",
    )
    problem(
        client.post(url, headers=pos, json={"reward": "members-only", "reference": "x"}),
        403,
        "not_eligible",
    )
    problem(
        client.post(url, headers=pos, json={"reward": "welcome-gift", "reference": "x"}),
        409,
        "reward_not_redeemable",
    )
    problem(
        client.post(
            url, headers=pos, json={"reward": "free-shipping", "reference": "x", "channel": "store"}
        ),
        422,
        "wrong_channel",
    )
    assert available(client, pos, poor) == 50
    assert client.get(f"/v1/members/{poor['id']}/vouchers", headers=pos).json()["items"] == []
    # The reference was not used up by the refusals.
    assert redeem(client, pos, poor, "plant-a-tree", "x")["replayed"] is False


def test_a_reference_cannot_be_reused_for_another_reward(
    client: TestClient, pos: Headers, rich: Json, problem: Callable[..., Any]
) -> None:
    redeem(client, pos, rich, "free-bun", "same")
    problem(
        client.post(
            f"/v1/members/{rich['id']}/redemptions",
            headers=pos,
            json={"reward": "mug", "reference": "same"},
        ),
        409,
        "reference_reused",
    )


def test_per_member_limit_per_month(
    client: TestClient, pos: Headers, admin: Headers, enrol: Callable[..., Json], clock: FixedClock
) -> None:
    member = enrol(pos, tags=["club"])
    give(client, admin, member, 100, "p")
    redeem(client, pos, member, "members-only", "m1")
    r = client.post(
        f"/v1/members/{member['id']}/redemptions",
        headers=pos,
        json={"reward": "members-only", "reference": "m2"},
    )
    assert (r.status_code, r.json()["code"]) == (409, "member_limit_reached")
    clock.advance(timedelta(days=20))  # 4 February: a new month
    redeem(client, pos, member, "members-only", "m3")


def test_a_voucher_of_another_program_is_not_found(
    client: TestClient,
    pos: Headers,
    rich: Json,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    problem: Callable[..., Any],
) -> None:
    code = redeem(client, pos, rich, "fifty-off", "o1")["code"]
    other = key_for(make_program(rewards=CATALOGUE), "pos")
    basket = {"basket": {"amount": 30000}}
    problem(
        client.post(f"/v1/vouchers/{code}/validate", headers=other, json=basket),
        404,
        "voucher_not_found",
    )
    problem(
        client.post(
            f"/v1/vouchers/{code}/consume", headers=other, json={"purchase_external_id": "r"}
        ),
        404,
        "voucher_not_found",
    )
    problem(client.get(f"/v1/vouchers/{code}", headers=other), 404, "voucher_not_found")


def test_an_expired_voucher_cannot_be_used(
    client: TestClient, pos: Headers, rich: Json, clock: FixedClock
) -> None:
    code = redeem(client, pos, rich, "fifty-off", "o1")["code"]
    clock.advance(timedelta(days=30))
    r = client.post(
        f"/v1/vouchers/{code}/validate", headers=pos, json={"basket": {"amount": 30000}}
    )
    assert (r.json()["valid"], r.json()["reason"]) == (False, "voucher_expired")
    assert client.get(f"/v1/vouchers/{code}", headers=pos).json()["status"] == "expired"
    r = client.post(f"/v1/vouchers/{code}/consume", headers=pos, json={"purchase_external_id": "r"})
    assert (r.status_code, r.json()["code"]) == (409, "voucher_expired")
    r = client.post(f"/v1/vouchers/{code}/cancel", headers=pos)
    assert (r.status_code, r.json()["code"]) == (409, "voucher_expired")


def test_cancelling_an_unused_voucher_gives_the_points_back(
    client: TestClient, pos: Headers, rich: Json, db: Database, shop: ProgramVersion
) -> None:
    code = redeem(client, pos, rich, "tasting", "t1")["code"]
    assert available(client, pos, rich) == 990
    assert client.get("/v1/rewards/tasting", headers=pos).json()["stock_left"] == 9
    r = client.post(f"/v1/vouchers/{code}/cancel", headers=pos)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert available(client, pos, rich) == 1000
    assert client.get("/v1/rewards/tasting", headers=pos).json()["stock_left"] == 10
    ledger = client.get(f"/v1/members/{rich['id']}/ledger", headers=pos).json()["items"]
    assert [e["kind"] for e in ledger[:3]] == ["refund", "redeem", "hold"]
    # Cancelling twice is harmless; a used voucher cannot be cancelled.
    assert client.post(f"/v1/vouchers/{code}/cancel", headers=pos).status_code == 200
    used = redeem(client, pos, rich, "free-bun", "f1")["code"]
    client.post(f"/v1/vouchers/{used}/consume", headers=pos, json={"purchase_external_id": "r"})
    r = client.post(f"/v1/vouchers/{used}/cancel", headers=pos)
    assert (r.status_code, r.json()["code"]) == (409, "voucher_used")
    sound(db, shop)


# -- gift cards, flags, donations, cashback, custom -------------------------------------------


def test_gift_cards_come_from_an_imported_code_pool(
    client: TestClient, pos: Headers, admin: Headers, rich: Json, problem: Callable[..., Any]
) -> None:
    r = client.get("/v1/gift-code-pools", headers=pos)
    assert r.json() == [
        {"pool": "gc500", "total": 0, "available": 0, "low_stock": 1, "running_low": True}
    ]
    problem(
        client.post(
            f"/v1/members/{rich['id']}/redemptions",
            headers=pos,
            json={"reward": "gift-500", "reference": "g0"},
        ),
        409,
        "out_of_stock",
    )
    r = client.post(
        "/v1/gift-code-pools/gc500/codes",
        headers=admin,
        json={"codes": ["AAA-1", "BBB-2", "AAA-1"]},
    )
    assert r.status_code == 201 and r.json() | {"added": 2, "available": 2} == r.json()
    r = client.post(
        "/v1/gift-code-pools/gc500/codes", headers=admin, json={"codes": ["BBB-2", "CCC-3"]}
    )
    assert (r.json()["added"], r.json()["duplicates"], r.json()["available"]) == (1, 1, 3)
    first = redeem(client, pos, rich, "gift-500", "g1")
    second = redeem(client, pos, rich, "gift-500", "g2")
    assert (first["gift_card_code"], second["gift_card_code"]) == ("AAA-1", "BBB-2")
    pools = client.get("/v1/gift-code-pools", headers=pos).json()
    assert pools[0] | {"available": 1, "running_low": True} == pools[0]
    problem(
        client.post(f"/v1/vouchers/{first['code']}/cancel", headers=pos),
        409,
        "voucher_not_cancellable",
    )
    problem(
        client.post("/v1/gift-code-pools/BAD POOL/codes", headers=admin, json={"codes": ["x"]}),
        422,
        "invalid_pool",
    )


def test_flags_for_the_shop_and_support(
    client: TestClient, pos: Headers, rich: Json, clock: FixedClock
) -> None:
    for reward in ("free-shipping", "spring-preview", "vip-line", "tasting"):
        redeem(client, pos, rich, reward, reward)
    perks = client.get(f"/v1/members/{rich['loyalty_number']}/perks", headers=pos).json()
    assert perks["free_shipping"] is True
    assert sorted((p["type"], p["value"]) for p in perks["perks"]) == [
        ("early_access", "spring-2026"),
        ("event", "Tasting at Kungsgatan"),
        ("free_shipping", None),
        ("service_perk", "vip"),
    ]
    clock.advance(timedelta(days=15))  # the preview pass lasted 14 days
    perks = client.get(f"/v1/members/{rich['id']}/perks", headers=pos).json()
    assert "early_access" not in {p["type"] for p in perks["perks"]}


def test_free_shipping_prices_the_shipping_lines_online_only(
    client: TestClient, pos: Headers, rich: Json
) -> None:
    code = redeem(client, pos, rich, "free-shipping", "s1")["code"]
    basket = {
        "amount": 30000,
        "channel": "online",
        "lines": [
            {"sku": "TEE", "amount": 25100},
            {"sku": "POSTNORD", "category": "shipping", "amount": 4900},
        ],
    }
    r = client.post(f"/v1/vouchers/{code}/validate", headers=pos, json={"basket": basket})
    assert (r.json()["valid"], r.json()["discount"]) == (True, 4900)
    in_store = {**basket, "channel": "store"}
    r = client.post(f"/v1/vouchers/{code}/validate", headers=pos, json={"basket": in_store})
    assert r.json()["reason"] == "wrong_channel"


def test_donations_are_totalled_per_cause(
    client: TestClient, pos: Headers, rich: Json, enrol: Callable[..., Json], admin: Headers
) -> None:
    other = enrol(pos)
    give(client, admin, other, 100, "p")
    first = redeem(client, pos, rich, "plant-a-tree", "d1")
    redeem(client, pos, other, "plant-a-tree", "d2")
    assert first["status"] == "used"
    r = client.get("/v1/reports/donations", headers=pos)
    assert r.json() == [{"cause": "vi-skogen", "donations": 2, "points": 80, "amount": 4000}]


def test_cashback_reward_fills_the_wallet(client: TestClient, pos: Headers, rich: Json) -> None:
    redeem(client, pos, rich, "cash-20", "c1")
    balance = client.get(f"/v1/members/{rich['id']}/balance", headers=pos).json()
    assert balance["available"] == 850
    assert balance["wallet"] | {"available": 2000, "currency": "SEK"} == balance["wallet"]


def test_custom_rewards_wait_for_the_business(client: TestClient, pos: Headers, rich: Json) -> None:
    voucher = redeem(client, pos, rich, "mug", "c1")
    assert (voucher["status"], voucher["benefit"]["attributes"]) == ("issued", {"sku": "MUG"})
    r = client.post(
        f"/v1/vouchers/{voucher['code']}/consume",
        headers=pos,
        json={"purchase_external_id": "ship-1"},
    )
    assert r.json()["voucher"]["status"] == "used"


def test_a_free_reward_is_granted_by_an_admin(
    client: TestClient, pos: Headers, admin: Headers, enrol: Callable[..., Json]
) -> None:
    member = enrol(pos)
    r = client.post(
        f"/v1/members/{member['id']}/grants",
        headers=admin,
        json={"reward": "welcome-gift", "reference": "w1", "reason": "welcome"},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["points"], r.json()["status"]) == (0, "issued")
    assert available(client, pos, member) == 0
    r = client.post(
        f"/v1/members/{member['id']}/grants",
        headers=pos,
        json={"reward": "welcome-gift", "reference": "w2", "reason": "x"},
    )
    assert r.status_code == 403


# -- pay with points --------------------------------------------------------------------------


def test_pay_with_points_at_the_programs_rate(
    client: TestClient, pos: Headers, rich: Json, problem: Callable[..., Any]
) -> None:
    url = f"/v1/members/{rich['id']}/pay-with-points"
    r = client.post(url, headers=pos, json={"purchase_external_id": "r1", "points": 500})
    assert r.status_code == 201, r.text
    assert (
        r.json() | {"points": 500, "amount": 5000, "currency": "SEK", "available": 500} == r.json()
    )
    r = client.post(url, headers=pos, json={"purchase_external_id": "r1", "points": 500})
    assert r.json()["replayed"] is True and available(client, pos, rich) == 500
    problem(
        client.post(
            url,
            headers=pos,
            json={"purchase_external_id": "r2", "points": 300, "purchase_amount": 5000},
        ),
        422,
        "points_share_too_large",
    )
    problem(
        client.post(url, headers=pos, json={"purchase_external_id": "r3", "points": 501}),
        422,
        "insufficient_points",
    )


# -- concurrency ------------------------------------------------------------------------------


def test_fifty_members_race_for_the_last_ten_places(
    client: TestClient,
    pos: Headers,
    admin: Headers,
    enrol: Callable[..., Json],
    db: Database,
    shop: ProgramVersion,
) -> None:
    racers = [enrol(pos) for _ in range(50)]
    for n, member in enumerate(racers):
        give(client, admin, member, 10, f"r{n}")
    barrier = threading.Barrier(len(racers))

    def run(index: int) -> httpx.Response:
        barrier.wait()
        return client.post(
            f"/v1/members/{racers[index]['id']}/redemptions",
            headers=pos,
            json={"reward": "tasting", "reference": f"race-{index}"},
        )

    with ThreadPoolExecutor(len(racers)) as pool:
        responses = list(pool.map(run, range(len(racers))))
    outcomes = Counter("issued" if r.status_code == 201 else r.json()["code"] for r in responses)
    assert outcomes == {"issued": 10, "out_of_stock": 40}
    balances = Counter(available(client, pos, member) for member in racers)
    assert balances == {0: 10, 10: 40}
    assert client.get("/v1/rewards/tasting", headers=pos).json()["stock_left"] == 0
    sound(db, shop)


# -- returns ----------------------------------------------------------------------------------


def test_a_return_gives_back_the_share_of_points_paid_on_the_purchase(
    client: TestClient,
    pos: Headers,
    rich: Json,
    buy: Callable[..., Json],
    db: Database,
    shop: ProgramVersion,
) -> None:
    # 600 points (60.00 SEK) pay part of a 200.00 SEK purchase, which earns 20 points.
    r = client.post(
        f"/v1/members/{rich['id']}/pay-with-points",
        headers=pos,
        json={"purchase_external_id": "till-7", "points": 600, "purchase_amount": 20000},
    )
    assert r.status_code == 201, r.text
    buy(pos, rich, 20000, external_id="till-7")
    assert available(client, pos, rich) == 1000 - 600 + 20

    def ret(external_id: str, amount: int | None = None) -> Json:
        body: Json = {
            "type": "return",
            "external_id": external_id,
            "original_external_id": "till-7",
        }
        if amount is not None:
            body["amount"] = amount
        r = client.post("/v1/activities", headers=pos, json=body)
        assert r.status_code == 201, r.text
        return r.json()  # type: ignore[no-any-return]

    # A quarter back: 150 points paid come back, 5 earned points go.
    result = ret("ret-1", 5000)
    assert result["balance"]["available"] == 420 + 150 - 5
    # The rest: the other 450 paid come back, the last 15 earned go.
    result = ret("ret-2")
    assert result["balance"]["available"] == 1000
    assert available(client, pos, rich) == 1000
    sound(db, shop)


def test_a_full_return_restores_the_voucher_used_on_it(
    client: TestClient, pos: Headers, rich: Json, buy: Callable[..., Json]
) -> None:
    code = redeem(client, pos, rich, "fifty-off", "v1")["code"]
    buy(pos, rich, 30000, external_id="order-5")
    r = client.post(
        f"/v1/vouchers/{code}/consume", headers=pos, json={"purchase_external_id": "order-5"}
    )
    assert r.json()["voucher"]["status"] == "used"
    body = {"type": "return", "external_id": "back-1", "original_external_id": "order-5"}
    half = {**body, "amount": 15000}
    assert client.post("/v1/activities", headers=pos, json=half).status_code == 201
    assert client.get(f"/v1/vouchers/{code}", headers=pos).json()["status"] == "used"
    rest = {**body, "external_id": "back-2"}
    assert client.post("/v1/activities", headers=pos, json=rest).status_code == 201
    voucher = client.get(f"/v1/vouchers/{code}", headers=pos).json()
    assert (voucher["status"], voucher["used_by"]) == ("issued", None)


# -- events and jobs --------------------------------------------------------------------------


def test_redemptions_and_vouchers_raise_outbox_events(
    client: TestClient, pos: Headers, admin: Headers, rich: Json
) -> None:
    client.post("/v1/gift-code-pools/gc500/codes", headers=admin, json={"codes": ["A1", "B2"]})
    voucher = redeem(client, pos, rich, "gift-500", "g1")  # one code left: running low
    mug = redeem(client, pos, rich, "mug", "m1")
    client.post(f"/v1/vouchers/{mug['code']}/cancel", headers=pos)
    events = client.get("/v1/events?limit=50", headers=pos).json()["items"]
    topics = [e["topic"] for e in reversed(events)]
    assert topics == [
        "gift_codes.low",
        "reward.redeemed",
        "reward.redeemed",
        "voucher.cancelled",
    ]
    redeemed = next(e for e in events if e["topic"] == "reward.redeemed")
    assert redeemed["payload"] | {"code": mug["code"], "reward": "mug"} == redeemed["payload"]
    assert redeemed["payload"]["benefit"]["attributes"] == {"sku": "MUG"}
    low = next(e for e in events if e["topic"] == "gift_codes.low")
    assert low["payload"] == {"pool": "gc500", "available": 1, "low_stock": 1}
    assert voucher["gift_card_code"] == "A1"


def test_the_job_marks_expired_vouchers(
    client: TestClient,
    pos: Headers,
    rich: Json,
    db: Database,
    clock: FixedClock,
    shop: ProgramVersion,
) -> None:
    code = redeem(client, pos, rich, "fifty-off", "e1")["code"]
    redeem(client, pos, rich, "mug", "e2")  # no end date
    clock.advance(timedelta(days=31))
    assert jobs.run_due(db, clock, [shop.program_id]).vouchers_expired == 1
    assert jobs.run_due(db, clock, [shop.program_id]).vouchers_expired == 0
    with db.read() as conn:
        stored = conn.execute(
            select(vouchers.c.code, vouchers.c.status)
            .where(vouchers.c.program_id == shop.program_id)
            .order_by(vouchers.c.id)
        ).all()
    assert tuple(stored[0]) == (code, "expired")
    assert [r.status for r in stored] == ["expired", "issued"]


def test_one_member_racing_itself_gets_the_monthly_limit_once(
    client: TestClient, pos: Headers, admin: Headers, enrol: Callable[..., Json]
) -> None:
    member = enrol(pos, tags=["club"])
    give(client, admin, member, 100, "p")
    barrier = threading.Barrier(10)

    def run(index: int) -> httpx.Response:
        barrier.wait()
        return client.post(
            f"/v1/members/{member['id']}/redemptions",
            headers=pos,
            json={"reward": "members-only", "reference": f"self-{index}"},
        )

    with ThreadPoolExecutor(10) as pool:
        responses = list(pool.map(run, range(10)))
    outcomes = Counter("issued" if r.status_code == 201 else r.json()["code"] for r in responses)
    assert outcomes == {"issued": 1, "member_limit_reached": 9}
    assert available(client, pos, member) == 90


def test_the_same_redemption_sent_twice_at_once_issues_one_voucher(
    client: TestClient, pos: Headers, rich: Json, db: Database, shop: ProgramVersion
) -> None:
    barrier = threading.Barrier(6)

    def run(_: int) -> httpx.Response:
        barrier.wait()
        return client.post(
            f"/v1/members/{rich['id']}/redemptions",
            headers=pos,
            json={"reward": "fifty-off", "reference": "twin"},
        )

    with ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(run, range(6)))
    assert {r.status_code for r in responses} == {201}
    assert len({r.json()["code"] for r in responses}) == 1
    assert available(client, pos, rich) == 900
    sound(db, shop)
