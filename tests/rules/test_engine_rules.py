"""The rules engine as a pure function (DESIGN rule 6): no database, exact points.

Programs are built with ProgramSpec.model_validate and run with engine.evaluate. The program
time zone is Europe/Stockholm (UTC+1 in winter, UTC+2 in summer); amounts are SEK minor units.
15 January 2026 is a Thursday.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from trofast.programs.spec import ProgramSpec
from trofast.rules.engine import (
    NO_COUNTERS,
    ActivityFacts,
    Counters,
    Evaluation,
    Line,
    MemberSnapshot,
    evaluate,
)

THU = datetime(2026, 1, 15, 10, 0, tzinfo=UTC)  # Thursday 11:00 in Stockholm
STOCKHOLM = ZoneInfo("Europe/Stockholm")
MEMBER = MemberSnapshot(id=7, status="active")
BASE: dict[str, Any] = {
    "id": "base",
    "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000},
}


def program(*rules: dict[str, Any], **fields: Any) -> ProgramSpec:
    document: dict[str, Any] = {
        "key": "rules-test",
        "name": "Rules test",
        "currency": "SEK",
        "timezone": "Europe/Stockholm",
        **fields,
    }
    if rules:
        document["rules"] = list(rules)
    return ProgramSpec.model_validate(document)


def buy(amount: int | None = None, *lines: Line, at: datetime = THU, **facts: Any) -> ActivityFacts:
    total = sum(line.amount for line in lines) if amount is None else amount
    return ActivityFacts(type="purchase", occurred_at=at, amount=total, lines=lines, **facts)


def event(event_type: str, at: datetime = THU, **attributes: Any) -> ActivityFacts:
    return ActivityFacts(type="event", occurred_at=at, event_type=event_type, attributes=attributes)


def line(
    sku: str, amount: int, quantity: int = 1, category: str | None = None, *labels: str
) -> Line:
    return Line(sku, quantity, amount, category, labels)


def by_rule(result: Evaluation) -> dict[str, int]:
    return {effect.rule: effect.points for effect in result.points}


def earned(
    spec: ProgramSpec,
    facts: ActivityFacts,
    member: MemberSnapshot = MEMBER,
    counters: Counters | None = NO_COUNTERS,
) -> dict[str, int]:
    return by_rule(evaluate(spec, facts, member, counters))


def run(
    spec: ProgramSpec, activities: Iterable[ActivityFacts], member: MemberSnapshot = MEMBER
) -> tuple[list[int], dict[str, tuple[int, int]], dict[str, int]]:
    """Evaluate activities one after another, keeping counters as the database would."""
    mine: dict[str, tuple[int, int]] = {}
    shared: dict[str, int] = {}
    totals = []
    for facts in activities:
        result = evaluate(spec, facts, member, Counters(dict(mine), dict(shared)))
        totals.append(result.total_points)
        for delta in result.counters:
            if delta.member:
                points, times = mine.get(delta.key, (0, 0))
                mine[delta.key] = (points + delta.points, times + delta.times)
            else:
                shared[delta.key] = shared.get(delta.key, 0) + delta.points
    return totals, mine, shared


def local(text: str) -> datetime:
    """A Stockholm wall-clock time, e.g. '2026-01-17 00:30'."""
    return datetime.fromisoformat(text).replace(tzinfo=STOCKHOLM)


# --- per amount ----------------------------------------------------------------------------


def test_default_rule_is_earn_rate_rounded_down() -> None:
    spec = program(earn={"points": 1, "per_amount": 1000})  # no rules: `earn` on purchases
    assert earned(spec, buy(4999)) == {"base": 4}
    assert earned(spec, buy(999)) == {}
    assert earned(spec, buy(0)) == {}
    assert earned(spec, event("signup")) == {}
    assert earned(program(earn={"points": 0}), buy(100000)) == {}


def test_per_amount_rate_and_minimum_order_value() -> None:
    spec = program({**BASE, "effect": {"kind": "per_amount", "points": 3, "per_amount": 2500}})
    assert earned(spec, buy(9999)) == {"base": 9}  # 3 full 25.00s, 3 points each
    spec = program({**BASE, "min_amount": 20000})
    assert earned(spec, buy(19999)) == {}
    assert earned(spec, buy(20000)) == {"base": 20}
    result = evaluate(spec, buy(19999), MEMBER)
    assert [(o.rule, o.value, o.note) for o in result.outcomes] == [
        ("base", 0, "below the minimum amount 20000")
    ]


def test_excluded_skus_categories_and_shipping_lines() -> None:
    spec = program(
        {
            **BASE,
            "min_amount": 6000,
            "lines": {
                "exclude_skus": ["gift-card"],
                "exclude_categories": ["tobacco", "shipping", "delivery"],
            },
        }
    )
    basket = (
        line("coffee", 5500, 1, "coffee"),
        line("snus", 6000, 1, "tobacco"),
        line("gift-card", 50000),
        line("postnord", 4900, 1, "shipping"),
        line("bud", 9900, 1, "delivery"),
        line("mug", 1900, 1, "home"),
    )
    assert earned(spec, buy(None, *basket)) == {"base": 7}  # 5500 + 1900 qualify
    # The minimum is on the qualifying amount (5 500 here), not the receipt total.
    assert earned(spec, buy(None, *basket[:5])) == {}


def test_fixed_points_per_product_unit() -> None:
    spec = program(
        BASE,
        {
            "id": "beans",
            "lines": {"skus": ["beans-500g"]},
            "effect": {"kind": "per_unit", "points": 50},
        },
    )
    basket = (line("beans-500g", 26700, 3, "coffee"), line("latte", 4500, 1, "coffee"))
    assert earned(spec, buy(None, *basket)) == {"base": 31, "beans": 150}
    assert earned(spec, buy(None, line("latte", 4500))) == {"base": 4}


# --- multipliers ---------------------------------------------------------------------------


def multiplier(rule_id: str, percent: int, **fields: Any) -> dict[str, Any]:
    return {
        "id": rule_id,
        "priority": 200,
        "effect": {"kind": "multiplier", "percent": percent, "of": ["base"]},
        **fields,
    }


def test_multipliers_per_sku_category_and_label() -> None:
    spec = program(
        BASE,
        multiplier("double-coffee", 200, lines={"categories": ["coffee"]}),
        multiplier("triple-eco", 300, lines={"labels": ["eco"]}),
        multiplier("bun-150", 150, lines={"skus": ["bun"]}),
    )
    basket = (
        line("latte", 4500, 1, "coffee"),  # 4 base points on its own
        line("bun", 2900, 1, "bakery", "eco"),  # 2 on its own
        line("mug", 3500, 1, "home"),
    )
    assert earned(spec, buy(None, *basket)) == {
        "base": 10,  # 10 900 // 1000
        "double-coffee": 4,
        "triple-eco": 4,
        "bun-150": 1,  # 2 * 50 // 100
    }
    assert earned(spec, buy(None, line("mug", 3500))) == {"base": 3}


def test_multiplier_per_store_and_per_channel() -> None:
    spec = program(
        BASE,
        multiplier("soder", 200, when=[{"field": "activity.store", "value": "Söder"}]),
        multiplier(
            "digital",
            150,
            when=[{"field": "activity.channel", "op": "in", "value": ["online", "app"]}],
        ),
    )
    assert earned(spec, buy(25000, store="Söder", channel="store")) == {"base": 25, "soder": 25}
    assert earned(spec, buy(25000, store="Kista", channel="store")) == {"base": 25}
    assert earned(spec, buy(25000, channel="app")) == {"base": 25, "digital": 12}
    assert earned(spec, buy(25000, channel="online")) == {"base": 25, "digital": 12}


@pytest.mark.parametrize(
    ("at", "happy"),
    [
        (local("2026-01-15 13:59"), False),
        (local("2026-01-15 14:00"), True),
        (local("2026-01-15 16:59"), True),
        (local("2026-01-15 17:00"), False),
        (datetime(2026, 7, 1, 13, 30, tzinfo=UTC), True),  # 15:30 summer time
        (datetime(2026, 1, 15, 13, 30, tzinfo=UTC), True),  # 14:30 winter time
        (datetime(2026, 7, 1, 12, 30, tzinfo=UTC), True),  # 14:30 summer time
        (datetime(2026, 1, 15, 12, 30, tzinfo=UTC), False),  # 13:30 winter time
    ],
)
def test_happy_hour_in_program_time_zone(at: datetime, happy: bool) -> None:
    spec = program(
        BASE,
        multiplier(
            "happy-hour", 200, when=[{"field": "now.hour", "op": "between", "value": [14, 16]}]
        ),
    )
    assert earned(spec, buy(12000, at=at)) == (
        {"base": 12, "happy-hour": 12} if happy else {"base": 12}
    )


@pytest.mark.parametrize(
    ("at", "weekend"),
    [
        (local("2026-01-16 23:59"), False),  # Friday
        (datetime(2026, 1, 16, 23, 30, tzinfo=UTC), True),  # Saturday 00:30 in Stockholm
        (local("2026-01-18 23:59"), True),  # Sunday
        (datetime(2026, 1, 18, 23, 30, tzinfo=UTC), False),  # Monday 00:30 in Stockholm
    ],
)
def test_double_points_on_weekends(at: datetime, weekend: bool) -> None:
    spec = program(
        BASE,
        multiplier("weekend", 200, when=[{"field": "now.weekday", "op": "in", "value": [6, 7]}]),
    )
    assert earned(spec, buy(30000, at=at)).get("weekend", 0) == (30 if weekend else 0)


@pytest.mark.parametrize(
    ("at", "active"),
    [
        (local("2026-01-16 23:59"), False),
        (local("2026-01-17 00:00"), True),
        (datetime(2026, 1, 18, 22, 59, tzinfo=UTC), True),  # 23:59 on the last day, local
        (datetime(2026, 1, 18, 23, 0, tzinfo=UTC), False),  # already the 19th in Stockholm
    ],
)
def test_campaign_date_range(at: datetime, active: bool) -> None:
    spec = program(
        BASE,
        multiplier("sale", 300, active_from="2026-01-17", active_until="2026-01-18"),
    )
    assert earned(spec, buy(10000, at=at)).get("sale", 0) == (20 if active else 0)


def test_multiplier_per_tier() -> None:
    spec = program(
        BASE,
        multiplier("gold", 150, when=[{"field": "tier.name", "value": "gold"}]),
        multiplier(
            "silver-up", 125, when=[{"field": "tier.name", "op": "in", "value": ["silver", "gold"]}]
        ),
    )
    assert earned(spec, buy(40000)) == {"base": 40}  # no tier (tiers are not built yet)
    silver = MemberSnapshot(id=7, status="active", tier="silver")
    gold = MemberSnapshot(id=7, status="active", tier="gold")
    assert earned(spec, buy(40000), silver) == {"base": 40, "silver-up": 10}
    assert earned(spec, buy(40000), gold) == {"base": 40, "gold": 20, "silver-up": 10}


def test_multiplier_of_a_capped_rule_multiplies_what_it_gave() -> None:
    spec = program(
        {**BASE, "limits": {"per_activity": 30}},
        multiplier("double", 200, lines={"categories": ["coffee"]}),
    )
    basket = (line("beans", 50000, 1, "coffee"), line("mug", 20000, 1, "home"))
    assert earned(spec, buy(None, *basket)) == {"base": 30, "double": 30}


def test_inactive_member_earns_nothing() -> None:
    spec = program(BASE)
    assert earned(spec, buy(50000), MemberSnapshot(id=7, status="suspended")) == {}


# --- airline style -------------------------------------------------------------------------

AIRLINE = program(
    {
        "id": "miles",
        "on": "flight",
        "effect": {
            "kind": "attribute",
            "attribute": "distance_km",
            "factor_by": "fare_class",
            "factors": {"J": 200, "Y": 100, "M": 50},
            "default_factor": 25,
        },
    },
    {
        "id": "ticket",
        "lines": {"categories": ["ticket"]},
        "effect": {"kind": "per_amount", "points": 5, "per_amount": 10000},
    },
    event_types=["flight"],
)


@pytest.mark.parametrize(
    ("fare_class", "points"), [("J", 2468), ("Y", 1234), ("M", 617), ("Q", 308), (None, 308)]
)
def test_airline_miles_from_distance_and_fare_class(fare_class: str | None, points: int) -> None:
    facts = event("flight", distance_km=1234, fare_class=fare_class)
    assert earned(AIRLINE, facts) == {"miles": points}


def test_airline_points_as_a_share_of_the_ticket_price() -> None:
    basket = (line("ARN-CDG", 249900, 1, "ticket"), line("bag", 45000, 1, "ancillary"))
    assert earned(AIRLINE, buy(None, *basket, channel="online")) == {"ticket": 120}  # 5 per 100 SEK
    assert earned(AIRLINE, event("flight", fare_class="J")) == {}  # no distance, no miles
    assert earned(AIRLINE, event("flight", distance_km="far")) == {}


# --- events --------------------------------------------------------------------------------

EVENTS = program(
    BASE,
    {"id": "welcome", "on": "signup", "effect": {"kind": "fixed", "points": 500}},
    {"id": "profile", "on": "profile_completed", "effect": {"kind": "fixed", "points": 200}},
    {"id": "visit", "on": "store_visit", "effect": {"kind": "fixed", "points": 20}},
    {"id": "review", "on": "review", "effect": {"kind": "fixed", "points": 50}},
    {"id": "share", "on": "social_share", "effect": {"kind": "fixed", "points": 10}},
    {"id": "referral", "on": "referral_completed", "effect": {"kind": "fixed", "points": 1000}},
    {
        "id": "survey",
        "on": "survey_answered",
        "effect": {"kind": "attribute", "attribute": "score", "points": 10},
    },
    {
        "id": "birthday",
        "on": "birthday",
        "when": [{"field": "member.birthday_week", "value": True}],
        "effect": {"kind": "fixed", "points": 300},
        "limits": {"per_member": [{"period": "year", "times": 1}]},
    },
    {"id": "workshop", "on": "workshop.attended", "effect": {"kind": "fixed", "points": 75}},
    event_types=["workshop.attended"],
)


@pytest.mark.parametrize(
    ("event_type", "attributes", "expected"),
    [
        ("signup", {}, {"welcome": 500}),
        ("profile_completed", {}, {"profile": 200}),
        ("store_visit", {"store": "Söder"}, {"visit": 20}),
        ("review", {"stars": 4}, {"review": 50}),
        ("social_share", {"network": "instagram"}, {"share": 10}),
        ("referral_completed", {"referred": 12}, {"referral": 1000}),
        ("survey_answered", {"score": 8}, {"survey": 80}),
        ("survey_answered", {}, {}),
        ("workshop.attended", {}, {"workshop": 75}),
        ("app_opened", {}, {}),  # nothing listens: no points, no error
    ],
)
def test_non_purchase_events(
    event_type: str, attributes: dict[str, Any], expected: dict[str, int]
) -> None:
    assert earned(EVENTS, event(event_type, **attributes)) == expected


def test_events_and_purchases_trigger_only_their_own_rules() -> None:
    assert earned(EVENTS, buy(25000)) == {"base": 25}
    assert earned(EVENTS, buy(25000, event_type="signup")) == {
        "base": 25
    }  # a purchase is a purchase


BIRTHDAY = MemberSnapshot(id=7, status="active", birth_date=date(1990, 1, 18))  # a Sunday in 2026


@pytest.mark.parametrize(
    ("at", "week", "today"),
    [
        (THU, True, False),
        (datetime(2026, 1, 11, 23, 30, tzinfo=UTC), True, False),  # Monday 00:30 in Stockholm
        (local("2026-01-11 23:59"), False, False),  # the Sunday before
        (datetime(2026, 1, 18, 22, 30, tzinfo=UTC), True, True),  # 23:30 on the day
        (datetime(2026, 1, 18, 23, 30, tzinfo=UTC), False, False),  # Monday 00:30: over
    ],
)
def test_birthday_week_and_day_in_program_time_zone(at: datetime, week: bool, today: bool) -> None:
    spec = program(
        {
            "id": "week",
            "on": "birthday",
            "when": [{"field": "member.birthday_week", "value": True}],
            "effect": {"kind": "fixed", "points": 300},
        },
        {
            "id": "day",
            "on": "birthday",
            "when": [{"field": "member.birthday_today", "value": True}],
            "effect": {"kind": "fixed", "points": 100},
        },
    )
    expected = ({"week": 300} if week else {}) | ({"day": 100} if today else {})
    assert earned(spec, event("birthday", at=at), BIRTHDAY) == expected


def test_birthday_week_spanning_new_year() -> None:
    spec = program(
        {
            "id": "week",
            "on": "birthday",
            "when": [{"field": "member.birthday_week", "value": True}],
            "effect": {"kind": "fixed", "points": 300},
        },
    )
    new_year = MemberSnapshot(id=7, status="active", birth_date=date(2000, 1, 1))
    # 30 Dec 2026 and 1 Jan 2027 are in the same ISO week (2026-W53).
    assert earned(spec, event("birthday", at=local("2026-12-30 12:00")), new_year) == {"week": 300}
    assert earned(spec, event("birthday", at=local("2027-01-01 12:00")), new_year) == {"week": 300}
    assert earned(spec, event("birthday", at=local("2026-12-27 12:00")), new_year) == {}
    new_years_eve = MemberSnapshot(id=7, status="active", birth_date=date(1999, 12, 31))
    # 31 Dec 2025 is a Wednesday (2026-W01), so 2 Jan 2026 is in its birthday week.
    assert earned(spec, event("birthday", at=local("2026-01-02 12:00")), new_years_eve) == {
        "week": 300
    }
    leap = MemberSnapshot(id=7, status="active", birth_date=date(2000, 2, 29))
    assert earned(spec, event("birthday", at=local("2026-02-25 12:00")), leap) == {"week": 300}


def test_birthday_bonus_once_a_year() -> None:
    in_week = [event("birthday", at=THU), event("birthday", at=THU + timedelta(days=1))]
    totals, counters, _ = run(EVENTS, in_week, BIRTHDAY)
    assert totals == [300, 0]
    assert counters == {"birthday:year:2026": (300, 1)}
    next_year = event("birthday", at=local("2027-01-20 12:00"))  # 18 Jan 2027 is a Monday
    assert earned(EVENTS, next_year, BIRTHDAY, Counters(counters)) == {"birthday": 300}
    no_birthday = MemberSnapshot(id=7, status="active")
    assert earned(EVENTS, event("birthday"), no_birthday) == {}


# --- caps and limits -----------------------------------------------------------------------


def test_cap_per_activity() -> None:
    spec = program({**BASE, "limits": {"per_activity": 100}})
    assert earned(spec, buy(99999)) == {"base": 99}
    result = evaluate(spec, buy(150000), MEMBER)
    assert by_rule(result) == {"base": 100}
    assert [o.note for o in result.outcomes] == ["capped per activity"]


@pytest.mark.parametrize(
    ("period", "second_day", "key"),
    [
        ("day", local("2026-01-16 00:00"), "2026-01-15"),
        ("week", local("2026-01-19 00:00"), "2026-W03"),
        ("month", local("2026-02-01 00:00"), "2026-01"),
        ("year", local("2027-01-01 00:00"), "2026"),
    ],
)
def test_points_per_member_per_period(period: str, second_day: datetime, key: str) -> None:
    spec = program({**BASE, "limits": {"per_member": [{"period": period, "points": 100}]}})
    same_period = second_day - timedelta(minutes=1)
    totals, counters, _ = run(
        spec, [buy(60000), buy(60000), buy(60000, at=same_period), buy(60000, at=second_day)]
    )
    assert totals == [60, 40, 0, 60]
    assert counters[f"base:{period}:{key}"] == (100, 2)


def test_times_per_member_per_period_and_ever() -> None:
    spec = program(
        {
            "id": "visit",
            "on": "store_visit",
            "effect": {"kind": "fixed", "points": 20},
            "limits": {
                "per_member": [
                    {"period": "day", "times": 1},
                    {"period": "week", "times": 3},
                    {"period": "ever", "points": 90},
                ]
            },
        }
    )
    days = [local(f"2026-01-{d} 12:00") for d in (12, 12, 13, 14, 15, 19, 20, 21)]
    totals, counters, _ = run(spec, [event("store_visit", at=d) for d in days])
    assert totals == [20, 0, 20, 20, 0, 20, 10, 0]  # daily once, 3 a week, 90 ever
    assert counters["visit:ever:ever"] == (90, 5)
    assert counters["visit:week:2026-W03"] == (60, 3)


def test_rule_budget_is_program_wide() -> None:
    spec = program(
        {
            "id": "launch",
            "on": "signup",
            "effect": {"kind": "fixed", "points": 100},
            "limits": {"budget": 250},
        }
    )
    result = evaluate(spec, event("signup"), MEMBER, Counters(program={"launch:budget": 200}))
    assert by_rule(result) == {"launch": 50}
    assert [o.note for o in result.outcomes] == ["rule budget reached"]
    assert [(c.key, c.points, c.member) for c in result.counters] == [("launch:budget", 50, False)]
    assert earned(spec, event("signup"), MEMBER, Counters(program={"launch:budget": 250})) == {}
    members = [MemberSnapshot(id=i, status="active") for i in (1, 2, 3, 4)]
    shared: dict[str, int] = {}
    given = []
    for member in members:  # every member reads and adds to the same budget counter
        result = evaluate(spec, event("signup"), member, Counters(program=shared))
        given.append(result.total_points)
        shared = {"launch:budget": shared.get("launch:budget", 0) + result.total_points}
    assert given == [100, 100, 50, 0]


def test_limits_ignored_when_counters_are_none() -> None:
    spec = program(
        {**BASE, "limits": {"per_activity": 50, "per_member": [{"period": "day", "points": 10}]}}
    )
    full = Counters({"base:day:2026-01-15": (10, 1)})
    assert earned(spec, buy(90000), counters=full) == {}
    assert earned(spec, buy(90000), counters=None) == {"base": 50}  # per activity still holds


# --- stamp cards ---------------------------------------------------------------------------

COFFEE_CARD = program(
    BASE,
    {
        "id": "coffee-stamps",
        "lines": {"categories": ["coffee"]},
        "effect": {"kind": "stamp", "card": "coffee"},
    },
    {
        "id": "visit-stamp",
        "on": "store_visit",
        "effect": {"kind": "stamp", "card": "visits", "per": "activity"},
    },
    stamp_cards=[
        {"id": "coffee", "name": "Tenth coffee free", "stamps": 10, "reward_points": 100},
        {"id": "visits", "name": "Five visits", "stamps": 5, "reward_points": 40},
    ],
)


def test_stamp_card_23_coffees_in_one_purchase() -> None:
    basket = (line("latte", 92000, 23, "coffee"), line("bun", 2500, 1, "bakery"))
    result = evaluate(COFFEE_CARD, buy(None, *basket), MEMBER)
    assert by_rule(result) == {"base": 94, "coffee-stamps:coffee": 200}
    assert [(c.key, c.points, c.times) for c in result.counters] == [("stamps:coffee", 3, 0)]


def test_stamp_card_restarts_over_many_purchases() -> None:
    coffees = [buy(None, line("latte", 4000 * n, n, "coffee")) for n in (1, 5, 2, 1, 6, 4, 1, 3)]
    totals, counters, _ = run(COFFEE_CARD, coffees)  # 23 coffees
    base = [4, 20, 8, 4, 24, 16, 4, 12]  # 4000 a coffee
    assert [t - b for t, b in zip(totals, base, strict=True)] == [0, 0, 0, 0, 100, 0, 100, 0]
    assert counters == {"stamps:coffee": (3, 0)}
    assert earned(
        COFFEE_CARD, buy(None, line("bun", 2500, 4, "bakery")), counters=Counters(counters)
    ) == {"base": 2}


def test_stamp_per_activity_and_from_an_existing_card() -> None:
    visits = [event("store_visit", at=THU + timedelta(hours=h)) for h in range(11)]
    totals, counters, _ = run(COFFEE_CARD, visits)
    assert totals == [0, 0, 0, 0, 40, 0, 0, 0, 0, 40, 0]
    assert counters == {"stamps:visits": (1, 0)}
    have_eight = Counters({"stamps:coffee": (8, 0)})
    result = evaluate(COFFEE_CARD, buy(None, line("latte", 12000, 3, "coffee")), MEMBER, have_eight)
    assert by_rule(result) == {"base": 12, "coffee-stamps:coffee": 100}
    assert [(c.key, c.points) for c in result.counters] == [("stamps:coffee", -7)]  # 8 -> 1
    assert "coffee-stamps: 3 stamp(s) on coffee: 1/10, 1 card(s) completed" in [
        f"{o.rule}: {o.note}" for o in result.outcomes
    ]


# --- cashback ------------------------------------------------------------------------------


def test_cashback_is_a_share_of_the_qualifying_amount() -> None:
    spec = program(
        BASE,
        {
            "id": "cash",
            "lines": {"exclude_categories": ["shipping"]},
            "effect": {"kind": "cashback", "basis_points": 250},
        },
    )
    result = evaluate(
        spec, buy(None, line("shoes", 123450), line("ship", 4900, 1, "shipping")), MEMBER
    )
    assert by_rule(result) == {"base": 128}
    assert [(c.rule, c.amount) for c in result.cashback] == [("cash", 3086)]  # 2.5% of 1234.50
    assert result.total_points == 128


# --- order and stacking --------------------------------------------------------------------

STACKING: list[dict[str, Any]] = [
    {**BASE, "priority": 10},
    {
        "id": "outlet-only",
        "priority": 5,
        "when": [{"field": "activity.store", "value": "outlet"}],
        "effect": {"kind": "fixed", "points": 10},
        "stop_after": True,
    },
    multiplier(
        "weekend", 200, group="promo", when=[{"field": "now.weekday", "op": "in", "value": [6, 7]}]
    ),
    multiplier(
        "vip", 300, group="promo", when=[{"field": "member.tags", "op": "contains", "value": "vip"}]
    ),
    {"id": "flat", "priority": 200, "group": "promo", "effect": {"kind": "fixed", "points": 25}},
    {
        "id": "flat-twin",
        "priority": 200,
        "group": "promo",
        "effect": {"kind": "fixed", "points": 25},
    },
    {
        "id": "welcome-a",
        "priority": 300,
        "effect": {"kind": "fixed", "points": 5},
        "stop_after": True,
    },
    {"id": "welcome-b", "priority": 300, "effect": {"kind": "fixed", "points": 7}},
    {"id": "never", "priority": 400, "effect": {"kind": "fixed", "points": 1000}},
]
SATURDAY = local("2026-01-17 12:00")
VIP = MemberSnapshot(id=7, status="active", tags=("vip",))


@pytest.mark.parametrize(
    ("facts", "member", "expected"),
    [
        # promo: weekend +10, vip +20, flat 25, flat-twin 25 -> flat (the tie goes by id)
        (buy(10000, at=SATURDAY), VIP, {"base": 10, "flat": 25, "welcome-a": 5}),
        # weekend +20, vip +40, flat 25 -> vip
        (buy(20000, at=SATURDAY), VIP, {"base": 20, "vip": 40, "welcome-a": 5}),
        (buy(50000, at=SATURDAY), MEMBER, {"base": 50, "weekend": 50, "welcome-a": 5}),
        (buy(50000), MEMBER, {"base": 50, "flat": 25, "welcome-a": 5}),
        (buy(50000, at=SATURDAY, store="outlet"), VIP, {"outlet-only": 10}),
    ],
)
def test_priority_stop_after_and_best_of_group(
    facts: ActivityFacts, member: MemberSnapshot, expected: dict[str, int]
) -> None:
    result = evaluate(program(*STACKING), facts, member)
    assert by_rule(result) == expected
    assert [e.rule for e in result.points] == list(expected)  # in (priority, id) order


def test_result_does_not_depend_on_document_order() -> None:
    activities = [
        (buy(10000, at=SATURDAY), VIP),
        (buy(20000, at=SATURDAY), VIP),
        (buy(50000, at=SATURDAY), MEMBER),
        (buy(50000, at=SATURDAY, store="outlet"), VIP),
    ]
    first = [evaluate(program(*STACKING), f, m) for f, m in activities]
    shuffler = random.Random(20260115)
    for _ in range(25):
        rules = list(STACKING)
        shuffler.shuffle(rules)
        shuffled = [evaluate(program(*rules), f, m) for f, m in activities]
        assert shuffled == first
    assert [r.total_points for r in first] == [40, 65, 105, 10]
    assert ("flat-twin", 0, "not the best of its group") in [
        (o.rule, o.value, o.note) for o in first[0].outcomes
    ]


# --- pending days and expiry ---------------------------------------------------------------


def test_vesting_and_expiry_per_rule_override_the_program_default() -> None:
    spec = program(
        BASE,
        {
            "id": "instant",
            "effect": {"kind": "fixed", "points": 10},
            "vesting_days": 0,
            "expiry": {"kind": "end_of_year"},
        },
        {
            "id": "slow",
            "effect": {"kind": "fixed", "points": 20},
            "vesting_days": 30,
            "expiry": {"kind": "never"},
        },
        {
            "id": "short",
            "effect": {"kind": "fixed", "points": 30},
            "expiry": {"kind": "after_months", "months": 3},
        },
        vesting_days=14,
        expiry={"kind": "after_months", "months": 12},
    )
    result = evaluate(spec, buy(10000), MEMBER)
    assert {e.rule: (e.points, e.vests_at, e.expires_at) for e in result.points} == {
        "base": (10, THU + timedelta(days=14), datetime(2027, 1, 15, 10, tzinfo=UTC)),
        "instant": (10, None, datetime(2026, 12, 31, 23, tzinfo=UTC)),  # new year in Stockholm
        "short": (30, THU + timedelta(days=14), local("2026-04-15 11:00")),  # summer time
        "slow": (20, THU + timedelta(days=30), None),
    }


def test_stamp_reward_uses_the_stamp_rules_vesting() -> None:
    spec = program(
        {
            "id": "stamps",
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "stamp", "card": "coffee"},
            "vesting_days": 2,
        },
        stamp_cards=[{"id": "coffee", "name": "Coffee", "stamps": 5, "reward_points": 50}],
        vesting_days=14,
    )
    result = evaluate(spec, buy(None, line("latte", 20000, 5, "coffee")), MEMBER)
    assert [(e.rule, e.points, e.vests_at) for e in result.points] == [
        ("stamps:coffee", 50, THU + timedelta(days=2))
    ]


# --- returns -------------------------------------------------------------------------------


def test_what_the_rest_of_a_purchase_earns() -> None:
    """The return path prices the remaining purchase with counters=None (limits aside)."""
    spec = program(
        {**BASE, "lines": {"exclude_categories": ["shipping"]}},
        multiplier("double-coffee", 200, lines={"categories": ["coffee"]}),
        {"id": "big", "min_amount": 60000, "effect": {"kind": "fixed", "points": 40}},
    )
    full = (
        line("beans", 31900, 2, "coffee"),
        line("grinder", 29900, 1, "home"),
        line("ship", 4900, 1, "shipping"),
    )
    assert earned(spec, buy(None, *full)) == {"base": 61, "double-coffee": 31, "big": 40}
    rest = (line("beans", 15950, 1, "coffee"), full[1], full[2])  # one bag of beans back
    assert earned(spec, buy(None, *rest), counters=None) == {"base": 45, "double-coffee": 15}


def test_a_rule_about_certain_lines_gives_nothing_without_them() -> None:
    spec = program(
        {
            "id": "coffee-bonus",
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "fixed", "points": 15},
        },
        {
            "id": "visit-stamp",
            "lines": {"categories": ["coffee"]},
            "effect": {"kind": "stamp", "card": "kaffe", "per": "activity"},
        },
        stamp_cards=[{"id": "kaffe", "name": "Kaffe", "stamps": 1, "reward_points": 7}],
    )
    tea = buy(None, line("te", 3000, 1, "tea"))
    assert earned(spec, tea) == {}
    assert earned(spec, buy(3000)) == {}  # no lines at all
    latte = buy(None, line("latte", 4500, 1, "coffee"))
    assert earned(spec, latte) == {"coffee-bonus": 15, "visit-stamp:kaffe": 7}
