"""Earning rules end to end through POST /v1/activities, on SQLite and on PostgreSQL: limits
and budgets whose counters persist between activities, stamp cards, cashback to the money
wallet, per-rule vesting, and returns that keep what the rest of the purchase earns.

The clock stands at Thursday 2026-01-15 10:00 UTC (11:00 in Stockholm, the program's zone).
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.activities import repository as activities
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs.service import ProgramVersion

Json = dict[str, Any]
Headers = dict[str, str]
_ids = itertools.count(1)

BASE: Json = {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}}
NOW = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)


class Shop:
    """A program with the given rules, a pos key, and helpers to send activities."""

    def __init__(
        self, client: TestClient, db: Database, program: ProgramVersion, pos: Headers
    ) -> None:
        self.client, self.db, self.program, self.pos = client, db, program, pos

    def enrol(self, **fields: Any) -> int:
        body = {"email": f"rules{next(_ids)}@example.com", **fields}
        r = self.client.post("/v1/members", json=body, headers=self.pos)
        assert r.status_code == 201, r.text
        return int(r.json()["id"])

    def send(self, body: Json) -> Json:
        r = self.client.post("/v1/activities", json=body, headers=self.pos)
        assert r.status_code == 201, r.text
        out: Json = r.json()
        return out

    def buy(self, member: int, *lines: Json, at: datetime = NOW, **extra: Any) -> Json:
        return self.send(
            {
                "type": "purchase",
                "external_id": f"r{next(_ids)}",
                "member_id": member,
                "amount": sum(line["amount"] for line in lines),
                "currency": "SEK",
                "occurred_at": at.isoformat(),
                "lines": list(lines),
                **extra,
            }
        )

    def event(self, member: int, event_type: str, at: datetime = NOW, **attributes: Any) -> Json:
        return self.send(
            {
                "type": "event",
                "external_id": f"e{next(_ids)}",
                "member_id": member,
                "event_type": event_type,
                "occurred_at": at.isoformat(),
                "attributes": attributes,
            }
        )

    def give_back(self, original: Json, **fields: Any) -> Json:
        return self.send(
            {
                "type": "return",
                "external_id": f"x{next(_ids)}",
                "original_external_id": original["external_id"],
                **fields,
            }
        )

    def balance(self, member: int, *fields: str) -> Json:
        r = self.client.get(f"/v1/members/{member}/balance", headers=self.pos)
        assert r.status_code == 200, r.text
        return {k: r.json()[k] for k in fields or ("available", "pending")}

    def counters(self, member: int, prefix: str) -> dict[str, int]:
        with self.db.read() as conn:
            return activities.member_counters(conn, self.program.program_id, member, prefix)

    def audit(self) -> list[str]:
        with self.db.read() as conn:
            return audit(conn, self.program.program_id)


@pytest.fixture
def shop(
    client: TestClient,
    db: Database,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[[ProgramVersion, str], Headers],
) -> Callable[..., Shop]:
    def make(*rules: Json, **fields: Any) -> Shop:
        program = make_program(rules=list(rules), **fields)
        return Shop(client, db, program, key_for(program, "pos"))

    return make


def local(text: str) -> datetime:
    """Stockholm wall-clock time in winter (UTC+1)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC) - timedelta(hours=1)


def line(sku: str, amount: int, quantity: int = 1, category: str | None = None) -> Json:
    return {"sku": sku, "amount": amount, "quantity": quantity, "category": category}


def test_member_limits_persist_between_activities(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            **BASE,
            "limits": {"per_activity": 100, "per_member": [{"period": "month", "points": 150}]},
        },
        {
            "id": "visit",
            "on": "store_visit",
            "effect": {"kind": "fixed", "points": 20},
            "limits": {
                "per_member": [{"period": "day", "times": 1}, {"period": "week", "points": 50}]
            },
        },
    )
    m = s.enrol()
    visits = [
        s.event(m, "store_visit", at=local(f"2026-01-{d} 10:00")) for d in (12, 12, 13, 14, 15)
    ]
    assert [v["points"] for v in visits] == [20, 0, 20, 10, 0]
    assert [v["notes"] for v in visits] == [
        [],
        ["visit: already 1 time(s) this day"],
        [],
        ["visit: capped per week"],
        ["visit: capped per week"],
    ]
    assert s.counters(m, "visit:") == {
        "visit:day:2026-01-12": 20,
        "visit:day:2026-01-13": 20,
        "visit:day:2026-01-14": 10,
        "visit:week:2026-W03": 50,
    }
    spend = [
        s.buy(m, line("tv", a), at=local("2026-01-10 12:00")) for a in (150000, 30000, 50000, 10000)
    ]
    assert [p["points"] for p in spend] == [100, 30, 20, 0]
    december = s.buy(m, line("tv", 150000), at=local("2025-12-31 23:59"))
    assert december["points"] == 100  # another month
    assert s.counters(m, "base:") == {"base:month:2026-01": 150, "base:month:2025-12": 100}
    assert s.balance(m) == {"available": 50 + 150 + 100, "pending": 0}
    assert s.audit() == []


def test_limits_hold_in_a_batch(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            "id": "visit",
            "on": "store_visit",
            "effect": {"kind": "fixed", "points": 20},
            "limits": {"per_member": [{"period": "day", "times": 2}]},
        },
    )
    m = s.enrol()
    items = [
        {
            "type": "event",
            "external_id": f"b{next(_ids)}",
            "member_id": m,
            "event_type": "store_visit",
        }
        for _ in range(4)
    ]
    r = s.client.post("/v1/activities/batch", json={"activities": items}, headers=s.pos)
    assert r.status_code == 200, r.text
    assert [item["result"]["points"] for item in r.json()["items"]] == [20, 20, 0, 0]
    assert s.event(m, "store_visit")["points"] == 0
    assert s.event(m, "store_visit", at=local("2026-01-14 09:00"))["points"] == 20
    assert s.balance(m) == {"available": 60, "pending": 0}


def test_rule_budget_is_shared_by_all_members(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            "id": "launch",
            "on": "review",
            "effect": {"kind": "fixed", "points": 100},
            "limits": {"budget": 250},
        },
        {
            "id": "ever",
            "on": "referral_completed",
            "effect": {"kind": "fixed", "points": 500},
            "limits": {"per_member": [{"period": "ever", "times": 2}]},
        },
    )
    members = [s.enrol() for _ in range(4)]
    assert [s.event(m, "review")["points"] for m in members] == [100, 100, 50, 0]
    assert s.event(members[3], "review")["notes"] == ["launch: rule budget reached"]
    first = members[0]
    referrals = [
        s.event(first, "referral_completed", at=local(f"2025-0{n}-01 12:00")) for n in (1, 5, 9)
    ]
    assert [r["points"] for r in referrals] == [500, 500, 0]
    assert s.balance(first) == {"available": 1100, "pending": 0}
    assert s.audit() == []


def test_birthday_once_a_year(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            "id": "birthday",
            "on": "birthday",
            "when": [{"field": "member.birthday_week", "value": True}],
            "effect": {"kind": "fixed", "points": 300},
            "limits": {"per_member": [{"period": "year", "times": 1}]},
        },
    )
    born_sunday = s.enrol(birth_date="1990-01-18")  # 18 Jan 2026 is a Sunday
    born_later = s.enrol(birth_date="1990-03-01")
    assert s.event(born_sunday, "birthday", at=local("2026-01-12 00:05"))["points"] == 300
    assert s.event(born_sunday, "birthday")["points"] == 0
    assert s.event(born_later, "birthday")["points"] == 0  # not their week
    assert s.event(born_sunday, "birthday", at=local("2025-01-14 12:00"))["points"] == 300  # 2025


def test_stamp_card_over_several_purchases(shop: Callable[..., Shop]) -> None:
    s = shop(
        BASE,
        {
            "id": "stamps",
            "lines": {"skus": ["latte", "espresso"]},
            "effect": {"kind": "stamp", "card": "coffee"},
        },
        stamp_cards=[{"id": "coffee", "name": "Tenth coffee", "stamps": 10, "reward_points": 100}],
    )
    m = s.enrol()
    visits = [
        s.buy(m, line("latte", 3900 * 9, 9), line("bun", 2500, 2)),
        s.buy(m, line("espresso", 2900 * 9, 9)),
        s.buy(m, line("latte", 3900 * 5, 5), line("beans", 15900, 1, "coffee")),
    ]  # 23 coffees: 2 cards, 3 stamps left
    assert [v["points"] for v in visits] == [37, 126, 135]
    assert [[(e["rule"], e["points"]) for e in v["effects"]] for v in visits] == [
        [("base", 37)],
        [("base", 26), ("stamps:coffee", 100)],
        [("base", 35), ("stamps:coffee", 100)],
    ]
    assert visits[2]["notes"] == ["stamps: 5 stamp(s) on coffee: 3/10, 1 card(s) completed"]
    assert s.counters(m, "stamps:") == {"stamps:coffee": 3}
    assert s.balance(m, "stamps") == {"stamps": {"coffee": 3}}
    assert s.balance(m) == {"available": 298, "pending": 0}


def test_cashback_goes_to_the_money_wallet_and_returns_take_it_back(
    shop: Callable[..., Shop],
) -> None:
    s = shop(
        BASE,
        {
            "id": "cash",
            "lines": {"exclude_categories": ["shipping"]},
            "effect": {"kind": "cashback", "basis_points": 200},
        },
    )
    m = s.enrol()
    bought = s.buy(
        m, line("shoes", 99900), line("socks", 23550, 3), line("ship", 4900, 1, "shipping")
    )
    assert (bought["points"], bought["cashback"]) == (128, 2469)  # 2 % of 1 234.50
    assert [(e["rule"], e["points"], e["cashback"]) for e in bought["effects"]] == [
        ("base", 128, 0),
        ("cash", 0, 2469),
    ]
    assert s.balance(m, "wallet")["wallet"] == {"currency": "SEK", "available": 2469, "pending": 0}
    assert s.balance(m) == {"available": 128, "pending": 0}
    assert s.audit() == []

    back = s.give_back(bought, lines=[line("socks", 23550, 3)])
    assert (back["points"], back["cashback"]) == (-24, -471)  # the rest: 104 points, 1 998 cash
    assert s.balance(m, "wallet")["wallet"] == {"currency": "SEK", "available": 1998, "pending": 0}
    assert s.balance(m) == {"available": 104, "pending": 0}
    assert s.audit() == []

    rest = s.give_back(bought)  # everything else
    assert (rest["points"], rest["cashback"]) == (-104, -1998)
    assert s.balance(m, "wallet")["wallet"] == {"currency": "SEK", "available": 0, "pending": 0}
    assert s.balance(m) == {"available": 0, "pending": 0}
    assert s.audit() == []


def test_vesting_and_expiry_per_rule(shop: Callable[..., Shop]) -> None:
    s = shop(
        BASE,
        {
            "id": "now",
            "effect": {"kind": "fixed", "points": 10},
            "vesting_days": 0,
            "expiry": {"kind": "end_of_year"},
        },
        {
            "id": "month",
            "effect": {"kind": "fixed", "points": 5},
            "expiry": {"kind": "after_months", "months": 1},
        },
        vesting_days=14,
        expiry={"kind": "after_months", "months": 12},
    )
    m = s.enrol()
    out = s.buy(m, line("coat", 150000))
    assert dates(out) == {
        "base": (150, "2026-01-29T10:00:00Z", "2027-01-15T10:00:00Z"),
        "month": (5, "2026-01-29T10:00:00Z", "2026-02-15T10:00:00Z"),
        "now": (10, None, "2026-12-31T23:00:00Z"),  # midnight in Stockholm, in UTC
    }
    assert s.balance(m) == {"available": 10, "pending": 155}
    # One instant, 00:30 on 31 March in Stockholm, sent with two offsets: the same dates,
    # months counted in the program's zone (30 April 00:30 there).
    expected = {
        "base": (150, "2025-04-13T22:30:00Z", "2026-03-30T22:30:00Z"),
        "month": (5, "2025-04-13T22:30:00Z", "2025-04-29T22:30:00Z"),
        "now": (10, None, "2025-12-31T23:00:00Z"),
    }
    at = datetime(2025, 3, 30, 22, 30, tzinfo=UTC)
    assert dates(s.buy(m, line("coat", 150000), at=at)) == expected
    plus_two = at.astimezone(timezone(timedelta(hours=2)))
    assert dates(s.buy(m, line("coat", 150000), at=plus_two)) == expected
    minus_five = at.astimezone(timezone(timedelta(hours=-5)))
    assert dates(s.buy(m, line("coat", 150000), at=minus_five)) == expected


def dates(answer: Json) -> dict[str, tuple[int, str | None, str | None]]:
    return {e["rule"]: (e["points"], e["vests_at"], e["expires_at"]) for e in answer["effects"]}


def test_partial_return_keeps_what_the_rest_earns(shop: Callable[..., Shop]) -> None:
    s = shop(
        {**BASE, "lines": {"exclude_categories": ["shipping"]}},
        {
            "id": "double-coffee",
            "priority": 200,
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]},
        },
        {"id": "big", "min_amount": 60000, "effect": {"kind": "fixed", "points": 40}},
        {"id": "beans", "lines": {"skus": ["beans"]}, "effect": {"kind": "per_unit", "points": 5}},
    )
    m = s.enrol()
    bought = s.buy(
        m,
        line("beans", 31900, 2, "coffee"),
        line("grinder", 29900, 1, "home"),
        line("ship", 4900, 1, "shipping"),
    )
    # base 61 (61 800 without shipping), double-coffee 31, big 40 (66 700 >= 60 000), beans 10
    assert bought["points"] == 142
    one_bag = s.give_back(bought, lines=[line("beans", 15950, 1, "coffee")])
    # rest: base 45, double-coffee 15, beans 5; big is lost (50 750 < 60 000)
    assert one_bag["points"] == -(142 - 65)
    assert s.balance(m) == {"available": 65, "pending": 0}
    by_amount = s.give_back(bought, amount=20000)
    # 30 750 left, lines (amount and quantity) shrunk in proportion: beans 9 664 (0 bags),
    # grinder 18 116, ship 2 968 -> base 27, double-coffee 9, beans 0
    assert by_amount["points"] == -(65 - 36)
    assert s.balance(m) == {"available": 36, "pending": 0}
    everything = s.give_back(bought)  # the rest: nothing is kept
    assert everything["points"] == -36
    assert s.balance(m) == {"available": 0, "pending": 0}
    assert s.audit() == []


def test_budget_and_member_limits_hold_under_concurrency(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            "id": "launch",
            "on": "review",
            "effect": {"kind": "fixed", "points": 100},
            "limits": {"budget": 250},
        },
        {
            "id": "visit",
            "on": "store_visit",
            "effect": {"kind": "fixed", "points": 20},
            "limits": {"per_member": [{"period": "day", "times": 2}]},
        },
    )
    members = [s.enrol() for _ in range(8)]
    barrier = threading.Barrier(8)

    def review(member: int) -> int:
        barrier.wait()
        return int(s.event(member, "review")["points"])

    def visit(_: int) -> int:
        barrier.wait()
        return int(s.event(members[0], "store_visit")["points"])

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(review, members)) == [0] * 5 + [50, 100, 100]
        assert sorted(pool.map(visit, range(8))) == [0] * 6 + [20, 20]
    assert s.counters(members[0], "visit:") == {"visit:day:2026-01-15": 40}
    assert s.audit() == []


def test_a_return_takes_its_stamps_back(shop: Callable[..., Shop]) -> None:
    s = shop(
        {
            "id": "stamps",
            "lines": {"skus": ["latte"]},
            "effect": {"kind": "stamp", "card": "coffee"},
        },
        stamp_cards=[{"id": "coffee", "name": "Tenth coffee", "stamps": 10, "reward_points": 100}],
    )
    m = s.enrol()
    first = s.buy(m, line("latte", 3900 * 3, 3))
    s.give_back(first)
    assert s.balance(m, "stamps") == {"stamps": {"coffee": 0}}
