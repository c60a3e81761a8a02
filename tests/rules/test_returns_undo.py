"""A return undoes everything its purchase did, end to end on SQLite and PostgreSQL: the
stamps of the returned lines (and a card they completed), what the purchase used of
per-member limits and rule budgets, and the vouchers its rules granted.

The clock stands at Thursday 2026-01-15 10:00 UTC, as in test_rules_api.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from test_rules_api import BASE, NOW, Json, Shop, line, shop

from trofast.programs.spec import ProgramSpec
from trofast.rules import engine

__all__ = ["shop"]  # the fixture, imported for the tests below

LATTE = 3900
STAMPS: Json = {
    "id": "stamps",
    "lines": {"skus": ["latte"]},
    "effect": {"kind": "stamp", "card": "coffee"},
}
POINTS_CARD = [{"id": "coffee", "name": "Tenth coffee", "stamps": 10, "reward_points": 100}]
VOUCHER_CARD = [{"id": "coffee", "name": "Third coffee", "stamps": 3, "reward": "free-coffee"}]


def lattes(n: int) -> Json:
    return line("latte", LATTE * n, n)


def card(s: Shop, member: int) -> int:
    return int(s.balance(member, "stamps")["stamps"]["coffee"])


def points(s: Shop, member: int) -> int:
    return int(s.balance(member)["available"])


def test_partial_and_full_returns_take_their_stamps_and_the_card_back(
    shop: Callable[..., Shop],
) -> None:
    s = shop(BASE, STAMPS, stamp_cards=POINTS_CARD)
    m = s.enrol()
    assert s.buy(m, lattes(8))["points"] == 31
    bought = s.buy(m, lattes(3), line("bun", 2500))  # 11 stamps: a card, 1 left
    assert [(e["rule"], e["points"]) for e in bought["effects"]] == [
        ("base", 14),
        ("stamps:coffee", 100),
    ]
    assert (points(s, m), card(s, m)) == (145, 1)

    one = s.give_back(bought, lines=[lattes(1)])  # 1 stamp off the 1 left: the card stands
    assert one["points"] == -4  # base 14 -> 10; the card's 100 stay
    assert one["notes"] == ["coffee: 1 stamp(s) taken back: 0/10"]
    assert (points(s, m), card(s, m)) == (141, 0)

    two = s.give_back(bought, lines=[lattes(1)])  # the card is no longer full: 8 + 1
    assert two["points"] == -104  # base 10 -> 6, and the card's 100
    assert two["notes"] == ["coffee: 1 stamp(s) taken back: 9/10, 1 card(s) taken back"]
    assert (points(s, m), card(s, m)) == (37, 9)

    rest = s.give_back(bought)  # the last latte and the bun
    assert rest["points"] == -6
    assert rest["notes"] == ["coffee: 1 stamp(s) taken back: 8/10"]
    assert (points(s, m), card(s, m)) == (31, 8)  # as before the purchase
    assert s.give_back(bought, external_id=rest["external_id"]) == {**rest, "replayed": True}
    assert (points(s, m), card(s, m)) == (31, 8)
    assert s.audit() == []


def test_a_card_that_later_stamps_fill_stays_completed(shop: Callable[..., Shop]) -> None:
    s = shop(BASE, STAMPS, stamp_cards=POINTS_CARD)
    m = s.enrol()
    s.buy(m, lattes(8))  # 31 points, 8 stamps
    completed = s.buy(m, lattes(3))  # 11 + 100 points, 1 stamp
    s.buy(m, lattes(5))  # 19 points, 6 stamps
    back = s.give_back(completed)
    # 6 - 3 = 3 stamps: the card stays completed, as 8 + 5 stamps would have completed it
    assert back["points"] == -11
    assert back["notes"] == ["coffee: 3 stamp(s) taken back: 3/10"]
    assert (points(s, m), card(s, m)) == (31 + 100 + 19, 3)
    assert s.audit() == []


def test_stamps_never_go_below_zero(shop: Callable[..., Shop]) -> None:
    s = shop(BASE, STAMPS, stamp_cards=POINTS_CARD)
    m = s.enrol()
    first = s.buy(m, lattes(5))
    s.buy(m, lattes(5))  # completes the card with the first purchase's stamps: 0 left
    back = s.give_back(first)
    # Only the cards its own purchase completed are taken back: the second's 100 stay.
    assert back["points"] == -19
    assert back["notes"] == ["coffee: 5 stamp(s) taken back: 0/10"]
    assert (points(s, m), card(s, m)) == (19 + 119 - 19, 0)
    assert s.audit() == []


def test_returns_give_back_what_they_used_of_member_limits(shop: Callable[..., Shop]) -> None:
    s = shop(
        {**BASE, "limits": {"per_member": [{"period": "month", "points": 100}]}},
        {
            "id": "daily",
            "effect": {"kind": "fixed", "points": 50},
            "limits": {"per_member": [{"period": "day", "times": 1}]},
        },
    )
    m = s.enrol()
    first = s.buy(m, line("tv", 60000))
    assert first["points"] == 110
    second = s.buy(m, line("tv", 60000))
    assert (second["points"], second["notes"]) == (
        40,
        ["base: capped per month", "daily: already 1 time(s) this day"],
    )
    assert s.counters(m, "") == {"base:month:2026-01": 100, "daily:day:2026-01-15": 50}

    back = s.give_back(first)
    assert back["points"] == -110  # gives the month 60 and the day's time back
    assert s.counters(m, "") == {"base:month:2026-01": 40, "daily:day:2026-01-15": 0}
    assert s.give_back(first, external_id=back["external_id"])["replayed"]
    assert s.counters(m, "") == {"base:month:2026-01": 40, "daily:day:2026-01-15": 0}
    third = s.buy(m, line("tv", 60000))
    assert (third["points"], third["notes"]) == (110, [])  # earned again

    assert s.give_back(third, amount=20000)["points"] == -20  # daily stays: no time back
    assert s.counters(m, "") == {"base:month:2026-01": 80, "daily:day:2026-01-15": 50}
    fourth = s.buy(m, line("tv", 30000))
    assert (fourth["points"], fourth["notes"]) == (
        20,
        ["base: capped per month", "daily: already 1 time(s) this day"],
    )
    assert points(s, m) == 40 + 90 + 20
    assert s.audit() == []


def test_a_return_gives_the_rule_budget_back(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            "id": "launch",
            "effect": {"kind": "fixed", "points": 100},
            "min_amount": 10000,
            "limits": {"budget": 250},
        }
    )
    members = [s.enrol() for _ in range(4)]
    bought = [s.buy(m, line("tv", 20000)) for m in members[:3]]
    assert [b["points"] for b in bought] == [100, 100, 50]
    assert s.give_back(bought[1], amount=5000)["points"] == 0  # 15 000 left: still 100
    assert s.give_back(bought[0], amount=15000)["points"] == -100  # 5 000 left: below minimum
    assert s.buy(members[3], line("tv", 20000))["points"] == 100  # the budget gave it again
    late = s.buy(members[0], line("tv", 20000))
    assert (late["points"], late["notes"]) == (0, ["launch: rule budget reached"])
    assert s.audit() == []


REWARDS: list[Json] = [
    {"id": "tote", "type": "custom", "name": "Tote bag", "cost": 0, "stock": 5},
    {"id": "free-coffee", "type": "free_product", "name": "Coffee", "cost": 0, "sku": "latte"},
]


def voucher(s: Shop, code: str) -> Json:
    r = s.client.get(f"/v1/vouchers/{code}", headers=s.pos)
    assert r.status_code == 200, r.text
    out: Json = r.json()
    return out


def granted(answer: Json) -> list[str]:
    return [e["voucher"] for e in answer["effects"] if e["reward"]]


def test_a_return_cancels_the_voucher_its_purchase_was_granted(
    shop: Callable[..., Shop],
) -> None:
    s = shop(
        BASE,
        {
            "id": "big-basket",
            "min_amount": 50000,
            "effect": {"kind": "reward", "reward": "tote"},
            "limits": {"per_member": [{"period": "ever", "times": 1}]},
        },
        rewards=REWARDS,
    )
    m = s.enrol()
    first = s.buy(m, line("coat", 60000))
    [code] = granted(first)
    back = s.give_back(first, amount=20000)  # 40 000 left: below the minimum
    assert back["points"] == -20
    assert [(e["rule"], e["reward"], e["voucher"]) for e in back["effects"]] == [
        ("return", None, None),
        ("return", "tote", code),
    ]
    assert voucher(s, code)["status"] == "cancelled"

    second = s.buy(m, line("coat", 60000))  # once ever, but the return gave the time back
    [used] = granted(second)
    r = s.client.post(
        f"/v1/vouchers/{used}/consume", json={"purchase_external_id": "till-9"}, headers=s.pos
    )
    assert r.status_code == 200, r.text
    back = s.give_back(second)
    assert back["points"] == -60
    assert back["notes"] == [f"big-basket: tote voucher {used} kept (voucher_used)"]
    assert voucher(s, used)["status"] == "used"
    third = s.buy(m, line("coat", 60000))  # the used voucher's time was not given back
    assert (granted(third), third["notes"]) == (
        [],
        ["big-basket: no more of this reward this period"],
    )
    assert s.audit() == []


def test_a_return_takes_back_a_voucher_card(shop: Callable[..., Shop]) -> None:
    s = shop(
        STAMPS,
        stamp_cards=VOUCHER_CARD,
        rewards=REWARDS,
    )
    m = s.enrol()
    bought = s.buy(m, lattes(4))  # a card and 1 stamp
    [code] = granted(bought)
    assert card(s, m) == 1
    one = s.give_back(bought, lines=[lattes(1)])
    assert one["notes"] == ["coffee: 1 stamp(s) taken back: 0/3"]
    assert voucher(s, code)["status"] == "issued"
    two = s.give_back(bought, lines=[lattes(1)])
    assert two["notes"] == ["coffee: 1 stamp(s) taken back: 2/3, 1 card(s) taken back"]
    assert [(e["reward"], e["voucher"]) for e in two["effects"]] == [("free-coffee", code)]
    assert (voucher(s, code)["status"], card(s, m)) == ("cancelled", 2)
    again = s.buy(m, lattes(1))  # the card fills again and grants a new voucher
    assert len(granted(again)) == 1 and card(s, m) == 0
    assert s.audit() == []


def test_a_used_card_voucher_keeps_its_card_completed(shop: Callable[..., Shop]) -> None:
    s = shop(
        STAMPS,
        stamp_cards=VOUCHER_CARD,
        rewards=REWARDS,
    )
    m = s.enrol()
    s.buy(m, lattes(2))
    bought = s.buy(m, lattes(2))  # completes the card: 1 stamp left
    [code] = granted(bought)
    r = s.client.post(
        f"/v1/vouchers/{code}/consume", json={"purchase_external_id": "p-used"}, headers=s.pos
    )
    assert r.status_code == 200, r.text
    back: dict[str, Any] = s.give_back(bought)
    assert back["notes"] == [
        f"stamps:coffee: free-coffee voucher {code} kept (voucher_used)",
        "coffee: 2 stamp(s) taken back: 0/3",
    ]
    assert (voucher(s, code)["status"], card(s, m)) == ("used", 0)
    assert s.audit() == []


def test_a_dry_run_return_changes_no_card(shop: Callable[..., Shop]) -> None:
    s = shop(BASE, STAMPS, stamp_cards=POINTS_CARD)
    m = s.enrol()
    bought = s.buy(m, lattes(3))
    body = {"type": "return", "external_id": "dry", "original_external_id": bought["external_id"]}
    r = s.client.post("/v1/activities?dry_run=true", json=body, headers=s.pos)
    assert r.status_code == 200, r.text
    assert r.json()["notes"] == ["coffee: 3 stamp(s) taken back: 0/10"]
    assert (points(s, m), card(s, m)) == (11, 3)


def test_the_stamp_note_reads_back() -> None:
    """Returns read what a purchase did to its cards from the stamp rules' notes."""
    spec = ProgramSpec.model_validate(
        {
            "key": "notes",
            "name": "Notes",
            "currency": "SEK",
            "rules": [STAMPS, {**STAMPS, "id": "beans", "lines": {"skus": ["beans"]}}],
            "stamp_cards": POINTS_CARD,
        }
    )
    facts = engine.ActivityFacts(
        "purchase",
        NOW,
        0,
        "SEK",
        lines=(engine.Line("latte", 21, 81900), engine.Line("beans", 1, 5)),
    )
    member = engine.MemberSnapshot(id=1, status="active")
    counters = engine.Counters({engine.stamp_key("coffee"): (9, 0)})
    notes = [o.note for o in engine.evaluate(spec, facts, member, counters).outcomes]
    assert [engine.stamps_noted(note) for note in notes] == [("coffee", 1, 1), ("coffee", 21, 2)]
    assert engine.stamps_noted("base: capped per month") is None


def test_any_split_of_returns_ends_where_it_began(shop: Callable[..., Shop]) -> None:
    """A purchase of 12 lattes on a card holding 7 (19 stamps: a card completed, 9 left),
    returned in pieces of lattes, then one latte's worth by amount, then the rest: the card
    and the points end as before the purchase, whatever the pieces."""
    s = shop(BASE, STAMPS, stamp_cards=POINTS_CARD)
    for pieces in ([1] * 10, [9, 1], [3, 3, 4], [10]):
        m = s.enrol()
        s.buy(m, lattes(7))  # 27 points
        bought = s.buy(m, lattes(12))  # 46 + 100 points
        assert (points(s, m), card(s, m)) == (173, 9)
        seen = []
        for n in pieces:
            s.give_back(bought, lines=[lattes(n)])
            seen.append(card(s, m))
        s.give_back(bought, amount=LATTE)  # one latte's worth, without lines
        s.give_back(bought)
        assert (points(s, m), card(s, m)) == (27, 7), (pieces, seen)
    assert s.audit() == []


def test_returns_undo_batch_purchases_and_a_batch_return_as_single_ones(
    shop: Callable[..., Shop],
) -> None:
    s = shop(BASE, STAMPS, stamp_cards=POINTS_CARD)
    m = s.enrol()
    purchases = [
        {
            "type": "purchase",
            "external_id": f"batch-{n}",
            "member_id": m,
            "amount": LATTE * count,
            "currency": "SEK",
            "lines": [lattes(count)],
        }
        for n, count in enumerate((8, 3))
    ]
    r = s.client.post("/v1/activities/batch", json={"activities": purchases}, headers=s.pos)
    assert r.status_code == 200, r.text
    assert [i["result"]["points"] for i in r.json()["items"]] == [31, 111]
    assert (points(s, m), card(s, m)) == (142, 1)
    undone = s.give_back(purchases[1], lines=[lattes(2)])  # the bulk path's stored answer
    assert (undone["points"], undone["notes"]) == (
        -108,
        ["coffee: 2 stamp(s) taken back: 9/10, 1 card(s) taken back"],
    )
    assert (points(s, m), card(s, m)) == (34, 9)
    bought = s.buy(m, lattes(3))  # 11 + 100 points, 2 stamps
    back = {
        "type": "return",
        "external_id": "batch-back",
        "original_external_id": bought["external_id"],
    }
    r = s.client.post("/v1/activities/batch", json={"activities": [back]}, headers=s.pos)
    assert r.status_code == 200, r.text
    assert r.json()["items"][0]["result"]["notes"] == [
        "coffee: 3 stamp(s) taken back: 9/10, 1 card(s) taken back"
    ]
    assert (points(s, m), card(s, m)) == (34, 9)
    assert s.audit() == []
