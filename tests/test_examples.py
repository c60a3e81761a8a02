"""The sample program files in examples/: every one validates, applies to both databases and
reads back unchanged, and a realistic activity earns exactly what its comments promise
(each expected number is worked out by hand in the comment above it)."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.programs import service as programs
from trofast.programs.spec import ProgramSpec, parse_document
from trofast.rules import engine
from trofast.rules.engine import ActivityFacts, Counters, Line, MemberSnapshot

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = sorted(EXAMPLES.glob("*.yaml"))


def load(name: str) -> ProgramSpec:
    return parse_document((EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8"))


def member(
    tier: str | None = None, tags: tuple[str, ...] = (), member_id: int = 42
) -> MemberSnapshot:
    return MemberSnapshot(id=member_id, status="active", tier=tier, tags=tags)


def purchase(at: datetime, *lines: Line, channel: str = "online", **kw: Any) -> ActivityFacts:
    return ActivityFacts(
        type="purchase",
        occurred_at=at,
        amount=sum(line.amount for line in lines),
        channel=channel,
        lines=lines,
        **kw,
    )


def event(event_type: str, at: datetime, **attributes: Any) -> ActivityFacts:
    return ActivityFacts(type="event", occurred_at=at, event_type=event_type, attributes=attributes)


def by_rule(evaluation: engine.Evaluation) -> dict[str, int]:
    return {e.rule: e.points for e in evaluation.points}


def test_there_are_examples() -> None:
    names = {path.stem for path in FILES}
    assert {"fashion-eshop", "airline", "grocery", "gym", "b2b-distributor"} <= names


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_example_validates(path: Path) -> None:
    spec = parse_document(path.read_text(encoding="utf-8"))
    engine.compile_program(spec)  # every condition compiles


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_example_applies(path: Path, db: Database, clock: FixedClock) -> None:
    spec = parse_document(path.read_text(encoding="utf-8"))
    # The test databases are shared: apply under a key of this test's own.
    mine = spec.model_copy(update={"key": f"ex-{uuid.uuid4().hex[:20]}"})
    with db.write() as conn:
        applied = programs.apply(conn, mine, clock.now())
    assert applied.version == 1
    with db.read() as conn:
        stored = programs.load_version(conn, applied.program_id, 1)
    assert stored.spec == mine  # what is stored reads back as the very same document


# --- fashion e-shop ------------------------------------------------------------------------

STOCKHOLM = ZoneInfo("Europe/Stockholm")


def test_fashion_denim_weeks_for_a_silver_member() -> None:
    spec = load("fashion-eshop")
    at = datetime(2026, 3, 5, 20, 15, tzinfo=STOCKHOLM)  # in the denim weeks
    order = purchase(
        at,
        Line("JEANS-501-32", 1, 89900, "denim"),
        Line("TEE-ORG-M", 1, 24900, "tops"),
        Line("SHIP-HOME", 1, 4900, "shipping"),
    )
    result = engine.evaluate(spec, order, member(tier="silver"))
    # base: shipping excluded, 89900 + 24900 = 114800 -> 114 points (1 per full 10 SEK)
    # tier-boost: silver's 125 % of 114 = +28.5 -> 28;  denim: base on the jeans alone = 89 -> +89
    assert by_rule(result) == {"base": 114, "tier-boost": 28, "denim-weeks": 89}
    assert result.total_points == 231
    # bonus check: 1 % of 114800 öre = 1148 öre; the Gold 3 % is not this member's
    assert [(c.rule, c.amount) for c in result.cashback] == [("bonus-check", 1148)]
    base = result.points[0]
    assert base.vests_at == at + timedelta(days=30)
    assert base.expires_at == datetime(2028, 1, 1, tzinfo=STOCKHOLM)


def test_fashion_gold_member_first_app_order_after_the_campaign() -> None:
    spec = load("fashion-eshop")
    at = datetime(2026, 3, 16, 9, 0, tzinfo=STOCKHOLM)  # denim weeks are over
    order = purchase(
        at,
        Line("JEANS-501-32", 1, 89900, "denim"),
        Line("COAT-OUTLET", 1, 60000, "outlet"),
        Line("SHIP-FREE", 1, 0, "shipping"),
        channel="app",
    )
    result = engine.evaluate(spec, order, member(tier="gold"))
    # base: 149900 -> 149; tier-boost at gold's 150 % -> +74 (74.5 down); first app order 50
    assert by_rule(result) == {"base": 149, "first-app-order": 50, "tier-boost": 74}
    # bonus check, best of the group: 3 % of 89900 (outlet excluded) = 2697 beats 1 % = 899
    assert [(c.rule, c.amount) for c in result.cashback] == [("bonus-check-gold", 2697)]
    # the app bonus is once ever
    again = engine.evaluate(
        spec, order, member(tier="gold"), Counters(member={"first-app-order:ever:ever": (50, 1)})
    )
    assert "first-app-order" not in by_rule(again)


# --- airline -------------------------------------------------------------------------------

OSLO = ZoneInfo("Europe/Oslo")


def test_airline_gold_member_on_a_flex_fare() -> None:
    spec = load("airline")
    flight = event(
        "flight",
        datetime(2026, 1, 20, 7, 5, tzinfo=OSLO),
        operated_by="NL",
        route="OSL-TRD",
        distance_km=390,
        fare_family="flex",
        fare_paid=249900,
    )
    result = engine.evaluate(spec, flight, member(tier="gold"))
    # 390 km x 150 % = 585; status-bonus at gold's 150 %: +292.5 -> 292
    assert by_rule(result) == {"flight-distance": 585, "status-bonus": 292}


def test_airline_campaign_and_its_budget() -> None:
    spec = load("airline")
    flight = event(
        "flight",
        datetime(2026, 5, 10, 16, 40, tzinfo=OSLO),
        operated_by="NL",
        route="OSL-NCE",
        distance_km=1730,
        fare_family="classic",
        fare_paid=149900,
    )
    result = engine.evaluate(spec, flight, member(tier="silver"))
    # 1730 x 100 % = 1730; status-bonus at silver's 125 %: +432 (432.5 down); campaign
    # +100 % of 1730
    assert by_rule(result) == {"flight-distance": 1730, "status-bonus": 432, "nice-spring": 1730}
    assert result.total_points == 3892
    # 1 000 points left in the campaign budget: it gives those and no more
    nearly_spent = Counters(program={"nice-spring:budget": 1_999_000})
    capped = engine.evaluate(spec, flight, member(tier="silver"), nearly_spent)
    assert by_rule(capped)["nice-spring"] == 1000
    assert capped.total_points == 3162


def test_airline_partner_flight_earns_by_price() -> None:
    spec = load("airline")
    flight = event(
        "flight",
        datetime(2026, 2, 3, 12, 0, tzinfo=OSLO),
        operated_by="BX",
        route="OSL-CPH",
        distance_km=520,
        fare_family="classic",
        fare_paid=349050,  # 3 490.50 NOK
    )
    # 1 point per full 10 NOK: 349050 // 1000 = 349; no distance points for a partner
    assert by_rule(engine.evaluate(spec, flight, member())) == {"flight-partner": 349}


# --- grocery -------------------------------------------------------------------------------

COPENHAGEN = ZoneInfo("Europe/Copenhagen")


def weekly_shop(at: datetime) -> ActivityFacts:
    return purchase(
        at,
        Line("5701-MILK-ECO", 1, 1495, "dairy", ("organic",)),
        Line("CIG-20", 1, 6500, "tobacco"),
        Line("PANT-A", 4, 600, "deposit"),
        Line("APPLE-ECO-1KG", 1, 2495, "fruit-veg", ("organic",)),
        Line("RUGBROD", 1, 2800, "bakery"),
        Line("COFFEE-500", 2, 7990, "coffee"),
        channel="store",
        store="torvet-aarhus-c",
    )


def test_grocery_personal_offer_for_an_organic_fan() -> None:
    spec = load("grocery")
    shop = weekly_shop(datetime(2026, 1, 15, 17, 30, tzinfo=COPENHAGEN))  # a Thursday
    result = engine.evaluate(spec, shop, member(tags=("organic-fan", "family")))
    # base: tobacco and deposit excluded: 1495 + 2495 + 2800 + 7990 = 14780 -> 147
    # organic: base on milk and apples = 39 -> triple adds 78; 2 coffee stamps, no card full
    assert by_rule(result) == {"base": 147, "organic-fans": 78}
    # Without the tag: only the base points.
    assert by_rule(engine.evaluate(spec, shop, member())) == {"base": 147}


def test_grocery_weekly_cap_stamp_card_and_fruit_tuesday() -> None:
    spec = load("grocery")
    shop = weekly_shop(datetime(2026, 1, 20, 17, 30, tzinfo=COPENHAGEN))  # a Tuesday, week 4
    counters = Counters(
        member={"organic-fans:week:2026-W04": (450, 3), "stamps:coffee-card": (9, 0)}
    )
    result = engine.evaluate(spec, shop, member(tags=("organic-fan",)), counters)
    # organic capped at the 50 left of 500 this week; fruit Tuesday doubles the apples'
    # 24 base points; the 10th coffee stamp fills the card: 100 points
    assert by_rule(result) == {
        "base": 147,
        "organic-fans": 50,
        "fruit-tuesday": 24,
        "coffee-stamps:coffee-card": 100,
    }
    assert result.total_points == 321


def test_grocery_win_back_list_and_partner_store() -> None:
    spec = load("grocery")
    at = datetime(2026, 2, 26, 11, 0, tzinfo=COPENHAGEN)  # win-back week
    shop = purchase(at, Line("RUGBROD", 1, 2800, "bakery"), channel="store")
    assert by_rule(engine.evaluate(spec, shop, member(member_id=2417))) == {
        "base": 28,
        "win-back-week-9": 28,
    }
    assert by_rule(engine.evaluate(spec, shop, member(member_id=2418))) == {"base": 28}
    fuel = purchase(
        at,
        Line("DIESEL", 1, 45050, "fuel"),
        Line("SNUS", 1, 5500, "tobacco"),
        channel="partner",
        store="brasa-vejle",
    )
    # partner: 1 point per full 2 DKK of 45050 -> 225; tobacco excluded, no base points
    assert by_rule(engine.evaluate(spec, fuel, member())) == {"partner-stores": 225}


# --- gym -----------------------------------------------------------------------------------


def test_gym_visits_once_a_day_and_three_days_a_week() -> None:
    spec = load("gym")
    at = datetime(2026, 1, 15, 7, 12, tzinfo=STOCKHOLM)  # Thursday of week 3
    visit = event("store_visit", at, club="sodermalm")
    assert by_rule(engine.evaluate(spec, visit, member())) == {"visit": 10, "regular-week": 15}
    # on the Puls Monthly plan (150 %): +5 and +7 (7.5 down) from plan-boost
    on_plan = dataclasses.replace(member(), plan="puls-monthly")
    assert by_rule(engine.evaluate(spec, visit, on_plan)) == {
        "visit": 10,
        "regular-week": 15,
        "plan-boost": 12,
    }
    # a second scan the same day earns nothing
    same_day = Counters(
        member={
            "visit:day:2026-01-15": (10, 1),
            "regular-week:day:2026-01-15": (15, 1),
            "regular-week:week:2026-W03": (15, 1),
        }
    )
    assert engine.evaluate(spec, visit, member(), same_day).points == []
    # the fourth training day of the week: the visit, but no more regular bonus
    fourth_day = Counters(member={"regular-week:week:2026-W03": (45, 3)})
    assert by_rule(engine.evaluate(spec, visit, member(), fourth_day)) == {"visit": 10}


def test_gym_survey_birthday_and_personal_training() -> None:
    spec = load("gym")
    at = datetime(2026, 1, 15, 19, 0, tzinfo=STOCKHOLM)
    # 85 % of the questions answered: 85 // 2 = 42 points
    survey = event("survey_answered", at, score=85)
    assert by_rule(engine.evaluate(spec, survey, member())) == {"survey": 42}
    birthday = event("birthday", at)
    assert by_rule(engine.evaluate(spec, birthday, member())) == {"birthday": 200}
    had_it = Counters(member={"birthday:year:2026": (200, 1)})
    assert engine.evaluate(spec, birthday, member(), had_it).points == []
    desk = purchase(
        at,
        Line("SHAKE-CHOC", 2, 7800, "drinks"),
        Line("PT-60", 3, 225000, "personal-training"),
        Line("FEE-MONTH", 1, 49900, "membership"),
        channel="store",
    )
    # shop: 7800 -> 7; personal training: 3 sessions x 25 = 75; the fee earns nothing
    assert by_rule(engine.evaluate(spec, desk, member())) == {"shop": 7, "pt-session": 75}


# --- B2B distributor -----------------------------------------------------------------------

HELSINKI = ZoneInfo("Europe/Helsinki")


def test_b2b_order_with_heat_pumps_and_rebate() -> None:
    spec = load("b2b-distributor")
    order = purchase(
        datetime(2026, 1, 15, 13, 0, tzinfo=HELSINKI),
        Line("HP-9KW", 3, 630000, "heat-pumps"),
        Line("FIT-22MM-BOX", 10, 120000, "fittings"),
        Line("FREIGHT", 1, 15000, "freight"),
    )
    result = engine.evaluate(spec, order, member())
    # base: 750000 (freight excluded) -> 75; heat pumps 630000 >= 5000 EUR: 2 x 63 = 126
    assert by_rule(result) == {"base": 75, "heat-pump-push": 126}
    # rebate: 1 % of 750000 = 7500 cents; the 2 % needs 25 000 EUR of goods
    assert [(c.rule, c.amount) for c in result.cashback] == [("rebate-standard", 7500)]
    assert result.points[0].vests_at == order.occurred_at + timedelta(days=45)
    small = purchase(order.occurred_at, Line("HP-9KW", 1, 210000, "heat-pumps"))
    # below both minimums: only the base points
    small_result = engine.evaluate(spec, small, member())
    assert by_rule(small_result) == {"base": 21}
    assert small_result.cashback == []


def test_b2b_quarterly_target_met() -> None:
    spec = load("b2b-distributor")
    closed = event(
        "quarterly_target_met",
        datetime(2026, 4, 3, 9, 0, tzinfo=HELSINKI),
        revenue=18_500_000,
        attainment_band="stretch",
    )
    result = engine.evaluate(spec, closed, member())
    # 185 000 EUR = 1850 points per 100 EUR, x 150 % = 2775; plus the flat 1 000
    assert by_rule(result) == {"quarterly-target": 2775, "quarterly-target-flat": 1000}
    huge = event("quarterly_target_met", closed.occurred_at, revenue=10**10)
    assert by_rule(engine.evaluate(spec, huge, member()))["quarterly-target"] == 50_000
    assert result.points[0].expires_at == datetime(2028, 1, 1, tzinfo=HELSINKI)


def test_local_dates_decide_the_campaign_window() -> None:
    """Date ranges are in the program's time zone: 00:30 on 16 March in Stockholm (still
    15 March in UTC) is after the denim weeks."""
    spec = load("fashion-eshop")
    assert spec.rules is not None
    denim = next(rule for rule in spec.rules if rule.id == "denim-weeks")
    assert (denim.active_from, denim.active_until) == (date(2026, 3, 2), date(2026, 3, 15))
    jeans = Line("JEANS-501-32", 1, 89900, "denim")
    last_evening = purchase(datetime(2026, 3, 15, 23, 30, tzinfo=STOCKHOLM), jeans)
    next_morning = purchase(datetime(2026, 3, 16, 0, 30, tzinfo=STOCKHOLM), jeans)
    assert by_rule(engine.evaluate(spec, last_evening, member()))["denim-weeks"] == 89
    assert "denim-weeks" not in by_rule(engine.evaluate(spec, next_morning, member()))


# --- tier earn multipliers: one rule `by: tier`, the percent on the tier -------------------


@pytest.mark.parametrize(
    ("name", "activity", "expected"),
    [
        # fashion, after the denim weeks: 114 800 öre of clothes -> base 114;
        # silver 125 %: +28 (28.5 down); gold 150 %: +57
        (
            "fashion-eshop",
            purchase(
                datetime(2026, 4, 7, 12, 0, tzinfo=STOCKHOLM),
                Line("JEANS-501-32", 1, 89900, "denim"),
                Line("TEE-ORG-M", 1, 24900, "tops"),
            ),
            {"club": 114, "silver": 114 + 28, "gold": 114 + 57},
        ),
        # airline: 1 730 km classic -> 1 730; silver +432 (432.5 down); gold +865
        (
            "airline",
            event(
                "flight",
                datetime(2026, 8, 1, 9, 0, tzinfo=OSLO),
                operated_by="NL",
                route="OSL-TOS",
                distance_km=1730,
                fare_family="classic",
            ),
            {"blue": 1730, "silver": 1730 + 432, "gold": 1730 + 865},
        ),
        # B2B: 9 950 EUR of fittings -> base 99 (no heat pumps); silver +24 (24.75 down);
        # gold +49 (49.5 down)
        (
            "b2b-distributor",
            purchase(
                datetime(2026, 2, 2, 10, 0, tzinfo=HELSINKI),
                Line("FIT-22MM-BOX", 50, 995000, "fittings"),
            ),
            {"partner": 99, "silver": 99 + 24, "gold": 99 + 49},
        ),
    ],
    ids=["fashion-eshop", "airline", "b2b-distributor"],
)
def test_tier_multiplier_counts_once(
    name: str, activity: ActivityFacts, expected: dict[str, int]
) -> None:
    spec = load(name)
    got = {
        tier.id: engine.evaluate(spec, activity, member(tier=tier.id)).total_points
        for tier in spec.tiers
    }
    assert got == expected
    # The extra comes from one rule, noted with the tier and its percent.
    gold = engine.evaluate(spec, activity, member(tier="gold"))
    boost = [o for o in gold.outcomes if o.note.startswith("tier gold")]
    assert [(o.value, o.note) for o in boost] == [
        (expected["gold"] - got[spec.tiers[0].id], "tier gold: 150 %")
    ]
