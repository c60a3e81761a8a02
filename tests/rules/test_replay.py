"""The replay's way through the rules gives what the long way gives.

`rules.replay.points()` (what `analytics.simulate` runs) must give the points of
`engine.evaluate(..., dates=False)`, count the vouchers of its `rewards`, and leave the
counters as `apply_counters()` leaves them with the evaluation's deltas; and the rules
that the engine leaves out of an evaluation at once (rules about lines that no line of the
basket is: `CompiledRule.skippable`) must change nothing at all, outcomes included.
Hypothesis builds random programs from every kind of rule, effect, limit and condition, and
runs histories of purchases and events through both; every example program runs a random
history made of what its own rules name.
"""

from __future__ import annotations

import dataclasses
import functools
import random
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from trofast.programs.spec import ProgramSpec, parse_document
from trofast.rules import engine, replay
from trofast.rules.engine import ActivityFacts, Counters, Evaluation, Line, MemberSnapshot

CATEGORIES = ["fruit", "dairy", "coffee", "tobacco"]
SKUS = [f"{c[:3]}-{n}" for c in CATEGORIES for n in range(3)]
LABELS = ["organic", "eco"]
EVENTS = ["store_visit", "review", "quiz"]
START = datetime(2026, 1, 1, tzinfo=UTC)
EXAMPLES = Path(__file__).parents[2] / "examples"

clauses = st.sampled_from(
    [
        {"field": "activity.channel", "op": "ne", "value": "partner"},
        {"field": "activity.channel", "op": "in", "value": ["app", "online"]},
        {"field": "activity.store", "op": "in", "value": ["s1", "s2"]},
        {"field": "activity.amount", "op": "gte", "value": 5_000},
        {"field": "now.weekday", "op": "in", "value": [6, 7]},
        {"field": "now.hour", "op": "between", "value": [8, 14]},
        {"field": "member.age", "op": "gte", "value": 40},
        {"field": "member.birthday_week", "op": "eq", "value": True},
        {"field": "member.days_enrolled", "op": "lt", "value": 60},
        {"field": "activity.attributes.stars", "op": "exists"},
        {"field": "activity.attributes.level", "op": "in", "value": ["hard"]},
    ]
)
line_filters = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "categories": st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=2),
            "skus": st.lists(st.sampled_from(SKUS), min_size=1, max_size=3),
            "labels": st.lists(st.sampled_from(LABELS), min_size=1, max_size=1),
            "exclude_categories": st.lists(st.sampled_from(CATEGORIES), min_size=1, max_size=1),
            "when": st.just([{"field": "line.quantity", "op": "gte", "value": 2}]),
        },
    ),
)
member_limits = st.lists(
    st.builds(
        lambda period, points, times: {
            "period": period,
            **({"points": points} if points else {}),
            **({"times": times or 1} if times or not points else {}),
        },
        st.sampled_from(["day", "week", "month", "year", "ever"]),
        st.sampled_from([None, 30, 200]),
        st.sampled_from([None, 1, 3]),
    ),
    max_size=2,
    unique_by=lambda limit: limit["period"],
)
limits = st.fixed_dictionaries(
    {},
    optional={
        "per_activity": st.sampled_from([20, 150]),
        "per_member": member_limits,
        "budget": st.sampled_from([300, 5_000]),
    },
)


@st.composite
def rules(draw: st.DrawFn, count: int, grouped: bool) -> list[dict[str, Any]]:
    made: list[dict[str, Any]] = []
    priority = 10
    for n in range(count):
        on = draw(st.sampled_from(["purchase"] * 4 + EVENTS))
        # in (priority, id) order, so that a multiplier can name the rules before it
        priority = draw(st.sampled_from([p for p in (10, 50, 90) if p >= priority]))
        multipliable = [
            r["id"] for r in made if r["effect"]["kind"] not in ("cashback", "stamp", "reward")
        ]
        kinds = ["per_amount", "fixed", "per_unit", "cashback", "stamp", "reward"]
        if on != "purchase":
            kinds = ["fixed", "attribute", "reward"]
        if multipliable:  # weighted: a multiplier only does something after its targets
            kinds += ["multiplier"] * 3
        kind = draw(st.sampled_from(kinds))
        effect: dict[str, Any] = {"kind": kind}
        if kind == "per_amount":
            effect |= {"points": draw(st.sampled_from([1, 2])), "per_amount": 100}
        elif kind in ("fixed", "per_unit"):
            effect["points"] = draw(st.sampled_from([5, 40]))
        elif kind == "cashback":
            effect["basis_points"] = 300
        elif kind == "stamp":
            effect |= {
                "card": draw(st.sampled_from(["c1", "c2", "c3"])),
                "per": draw(st.sampled_from(["unit", "activity"])),
            }
        elif kind == "multiplier":
            targets = draw(st.lists(st.sampled_from(multipliable), min_size=1, unique=True))
            percent = draw(st.sampled_from([{"percent": 150}, {"percent": 300}, {"by": "tier"}]))
            effect |= {**percent, "of": targets}
        elif kind == "reward":
            effect["reward"] = "v1"
        elif kind == "attribute":
            effect |= {"attribute": "score", "factor_by": "level", "factors": {"hard": 200}}
        rule: dict[str, Any] = {
            "id": f"r{n:02d}",
            "on": on,
            "priority": priority,
            "when": draw(st.lists(clauses, max_size=2)),
            "effect": effect,
            "limits": draw(limits),
            "min_amount": draw(st.sampled_from([0, 0, 0, 3_000])),
            "stop_after": draw(st.booleans().filter(lambda b: not b) | st.booleans()),
        }
        if on == "purchase":
            if (lines := draw(line_filters)) is not None:
                rule["lines"] = lines
            if grouped and draw(st.integers(0, 4)) == 0:
                rule["group"] = "g"
        if draw(st.integers(0, 5)) == 0:
            rule["active_from"] = "2026-01-03"
            rule["active_until"] = "2026-01-06"
        made.append(rule)
    return made


@st.composite
def programs(draw: st.DrawFn, grouped: bool = True) -> ProgramSpec:
    """Random programs; without best-of groups (`grouped` False) most of them are planned
    whole by `replay` (which leaves groups and line conditions to the generic engine)."""
    made = draw(rules(draw(st.integers(1, 12)), grouped))
    by_tier = any(r["effect"].get("by") == "tier" for r in made)
    document = {
        "key": "points-only",
        "name": "Points only",
        "currency": "SEK",
        "timezone": "Europe/Stockholm",
        "event_types": ["quiz"],
        "rules": made,
        # a tier multiplier (`by: tier`) multiplies by gold's percent
        "tiers": [
            {"id": "member", "name": "Member"},
            {
                "id": "gold",
                "name": "Gold",
                "threshold": {"spend": 100_000},
                "earn_multiplier_percent": 175 if by_tier else 100,
            },
        ],
        "stamp_cards": [
            {"id": "c1", "name": "One", "stamps": 3, "reward_points": 50},
            {"id": "c2", "name": "Two", "stamps": 5, "reward_points": 80},
            {"id": "c3", "name": "Voucher", "stamps": 2, "reward": "v1"},
        ],
        "rewards": [
            {"id": "v1", "type": "free_product", "name": {"en": "A bun"}, "cost": 0, "sku": "bun"}
        ],
    }
    try:
        return ProgramSpec.model_validate(document)
    except ValidationError:  # e.g. a multiplier in a group of rules that run before its target
        reject()


lines = st.builds(
    lambda sku, quantity, price, labels: Line(
        sku, quantity, quantity * price, CATEGORIES[SKUS.index(sku) // 3], tuple(labels)
    ),
    st.sampled_from(SKUS),
    st.integers(1, 3),
    st.sampled_from([0, 250, 1_900, 6_000]),
    st.lists(st.sampled_from(LABELS), max_size=2, unique=True),
)


@st.composite
def activities(draw: st.DrawFn) -> tuple[int, ActivityFacts]:
    at = START + timedelta(minutes=draw(st.integers(0, 14 * 24 * 60)))
    member = draw(st.integers(0, 2))
    if draw(st.integers(0, 3)) == 0:
        attributes = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "stars": st.integers(1, 5),
                    "score": st.integers(0, 100),
                    "level": st.sampled_from(["easy", "hard", {"odd": 1}]),
                },
            )
        )
        facts = ActivityFacts(
            "event", at, event_type=draw(st.sampled_from(EVENTS)), attributes=attributes
        )
        return member, facts
    basket = tuple(draw(st.lists(lines, max_size=5)))
    amount = sum(ln.amount for ln in basket) if basket else draw(st.sampled_from([0, 4_000]))
    channel = draw(st.sampled_from(["store", "app", "online", "partner"]))
    store = draw(st.sampled_from(["s1", "s2", "s3"]))
    return member, ActivityFacts("purchase", at, amount, "SEK", store, channel, basket)


MEMBERS = [
    MemberSnapshot(1, "active", date(1980, 1, 5), START - timedelta(days=30)),
    MemberSnapshot(2, "active", None, START - timedelta(days=400), tags=("vip",), tier="gold"),
    MemberSnapshot(3, "suspended", date(1950, 6, 1), START - timedelta(days=10)),
]


def without_skipping(program: engine.CompiledProgram) -> engine.CompiledProgram:
    return dataclasses.replace(program, skippable={})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(), st.lists(activities(), min_size=1, max_size=40))
def test_replay_and_skipping_change_nothing(
    spec: ProgramSpec, history: list[tuple[int, ActivityFacts]]
) -> None:
    replay_both_ways(spec, history)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs(grouped=False), st.lists(activities(), min_size=1, max_size=40))
def test_planned_points_without_groups(
    spec: ProgramSpec, history: list[tuple[int, ActivityFacts]]
) -> None:
    replay_both_ways(spec, history)


def replay_both_ways(spec: ProgramSpec, history: list[tuple[int, ActivityFacts]]) -> None:
    """evaluate() with apply_counters() (with and without skipping rules) and
    replay.points() give the same points, counters and vouchers after every activity."""
    program = engine.compile_program(spec)
    unskipped = without_skipping(program)
    # the long way, as the live system keeps counters; the same without skipping rules;
    # replay.points, writing its counters in place
    long_counts: list[dict[str, tuple[int, int]]] = [{}, {}, {}]
    long_shared: dict[str, int] = {}
    long_grants: dict[str, int] = {}
    short_counts: list[dict[str, tuple[int, int]]] = [{}, {}, {}]
    short_shared: dict[str, int] = {}
    short_grants: dict[str, int] = {}
    for who, facts in sorted(history, key=lambda item: item[1].occurred_at):
        member = MEMBERS[who]
        counters = Counters(long_counts[who], long_shared)
        result = engine.evaluate(spec, facts, member, counters, dates=False)
        # the long way without skipping: every rule tried, the same effects and outcomes
        plain = Evaluation()
        rules = program.by_trigger.get(facts.trigger)
        if member.status == "active" and rules:
            engine._walk(
                unskipped, rules, facts, member, plain, counters.member, {},
                long_shared, True, False,
            )  # fmt: skip
        assert plain == result
        # and with dates, the live system's way, also unchanged by skipping
        dated = engine.evaluate(spec, facts, member, counters)
        assert [(e.points, e.rule) for e in dated.points] == [
            (e.points, e.rule) for e in result.points
        ]
        engine.apply_counters(long_counts[who], long_shared, result.counters)
        for grant in result.rewards:
            long_grants[grant.reward] = long_grants.get(grant.reward, 0) + 1
        points = replay.points(
            program, facts, member, short_counts[who], short_shared, short_grants
        )
        assert points == result.total_points
        assert short_counts == long_counts
        assert short_shared == long_shared
        assert short_grants == long_grants


def test_a_rule_about_absent_lines_is_left_out() -> None:
    spec = ProgramSpec.model_validate(
        {
            "key": "skip",
            "name": "Skip",
            "currency": "SEK",
            "timezone": "Europe/Stockholm",
            "rules": [
                {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 100}},
                {"id": "coffee", "lines": {"categories": ["coffee"]}, "priority": 200,
                 "effect": {"kind": "multiplier", "percent": 200, "of": ["base"]}},
                {"id": "big-coffee", "lines": {"categories": ["coffee"]}, "min_amount": 10_000,
                 "priority": 200, "effect": {"kind": "fixed", "points": 5}},
            ],
        }
    )  # fmt: skip
    program = engine.compile_program(spec)
    assert program.skippable == {"purchase": True}
    assert [c.skippable for c in program.by_trigger["purchase"]] == [False, False, True]
    tea = ActivityFacts("purchase", START, 500, lines=(Line("tea", 1, 500, "tea"),))
    result = engine.evaluate(spec, tea, MEMBERS[0])
    # the rule with a minimum amount is still tried: it says why it gave nothing
    assert [(o.rule, o.value, o.note) for o in result.outcomes] == [
        ("base", 5, ""),
        ("big-coffee", 0, "below the minimum amount 10000"),
    ]


def example_history(
    spec: ProgramSpec, seed: int, size: int
) -> list[tuple[MemberSnapshot, ActivityFacts]]:
    """A random history for `spec` made of the values its own rules name (categories, skus,
    labels, stores, channels, tags, tiers, event types, attributes), so that its rules fire."""
    rng = random.Random(seed)
    named: set[Any] = set()
    for rule in spec.rules or ():
        for clause in [*rule.when, *(rule.lines.when if rule.lines else [])]:
            values = clause.value if isinstance(clause.value, list) else [clause.value]
            named.update(v for v in values if isinstance(v, str))
    words = [*sorted(named), "other"]
    filters = [r.lines for r in spec.rules or () if r.lines is not None]
    categories = sorted({c for f in filters for c in [*f.categories, *f.exclude_categories]})
    skus = sorted({s for f in filters for s in [*f.skus, *f.exclude_skus]})
    labels = sorted({label for f in filters for label in f.labels})
    products = [(sku, rng.choice([*categories, "other"])) for sku in skus] + [
        (f"{category}-{n}", category) for category in [*categories, "other"] for n in range(3)
    ]
    events = sorted({r.on for r in spec.rules or () if r.on != "purchase"})
    attributes: dict[str, list[Any]] = {}
    for rule in spec.rules or ():
        effect = rule.effect
        if effect.kind == "attribute":
            attributes[effect.attribute] = [0, 350, 1_200, 5_800]
            if effect.factor_by is not None:
                attributes[effect.factor_by] = [*effect.factors, "other"]
    tiers = [None, *(tier.id for tier in spec.tiers)]
    plans = [None, *(plan.id for plan in spec.membership_plans)]
    members = [
        MemberSnapshot(
            n,
            "active",
            date(1960 + n % 40, 1 + n % 12, 1 + n % 28),
            START - timedelta(days=n * 17),
            tags=tuple(rng.sample(words, k=min(len(words), rng.choice([0, 0, 1, 2])))),
            channel=rng.choice(words),
            tier=rng.choice(tiers),
            plan=rng.choice(plans),
        )
        for n in range(12)
    ]
    history = []
    at = START
    for _ in range(size):
        at += timedelta(minutes=rng.randrange(1, 600))
        member = rng.choice(members)
        if events and rng.random() < 0.25:
            values = {name: rng.choice(pool) for name, pool in attributes.items()}
            facts = ActivityFacts("event", at, event_type=rng.choice(events), attributes=values)
        else:
            basket = []
            for _ in range(rng.randint(0, 8)):
                sku, category = rng.choice(products)
                quantity = rng.choice([1, 1, 2, 3])
                basket.append(
                    Line(
                        sku,
                        quantity,
                        quantity * rng.choice([900, 2_500, 4_990, 12_000]),
                        category,
                        tuple(rng.sample(labels, k=rng.choice([0, 0, min(1, len(labels))]))),
                    )
                )
            amount = sum(line.amount for line in basket) or rng.choice([0, 25_000])
            facts = ActivityFacts(
                "purchase", at, amount, spec.currency, rng.choice(words), rng.choice(words),
                tuple(basket),
            )  # fmt: skip
        history.append((member, facts))
    return history


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_programs_replay_the_long_way(path: Path) -> None:
    """Every example program, over a random history of what its rules name: replay.points()
    gives the points, counters and vouchers of evaluate() after every activity."""
    spec = parse_document(path.read_text())
    program = engine.compile_program(spec)
    long_counts: dict[int, dict[str, tuple[int, int]]] = {}
    long_shared: dict[str, int] = {}
    short_counts: dict[int, dict[str, tuple[int, int]]] = {}
    short_shared: dict[str, int] = {}
    long_grants: dict[str, int] = {}
    short_grants: dict[str, int] = {}
    earned = 0
    for member, facts in example_history(spec, seed=len(path.stem), size=3_000):
        mine = long_counts.setdefault(member.id, {})
        result = engine.evaluate(spec, facts, member, Counters(mine, long_shared), dates=False)
        engine.apply_counters(mine, long_shared, result.counters)
        for grant in result.rewards:
            long_grants[grant.reward] = long_grants.get(grant.reward, 0) + 1
        points = replay.points(
            program, facts, member, short_counts.setdefault(member.id, {}), short_shared,
            short_grants,
        )  # fmt: skip
        assert points == result.total_points, facts
        assert short_counts == long_counts
        earned += points
    assert short_shared == long_shared
    assert short_grants == long_grants
    assert earned > 0


def same_both_ways(rules: list[dict[str, Any]], baskets: list[tuple[Line, ...]]) -> int:
    """Replay `baskets` (one member, a day apart) under `rules` both ways; their points."""
    spec = ProgramSpec.model_validate(
        {
            "key": "both-ways",
            "name": "Both ways",
            "currency": "SEK",
            "timezone": "Europe/Stockholm",
            "rules": rules,
            "stamp_cards": [{"id": "c1", "name": "One", "stamps": 3, "reward_points": 50}],
        }
    )
    program = engine.compile_program(spec)
    long_counts: dict[str, tuple[int, int]] = {}
    short_counts: dict[str, tuple[int, int]] = {}
    earned = 0
    for day, basket in enumerate(baskets):
        amount = sum(line.amount for line in basket)
        facts = ActivityFacts("purchase", START + timedelta(days=day), amount, lines=basket)
        result = engine.evaluate(spec, facts, MEMBERS[0], Counters(long_counts), dates=False)
        engine.apply_counters(long_counts, {}, result.counters)
        points = replay.points(program, facts, MEMBERS[0], short_counts, {})
        assert (points, short_counts) == (result.total_points, long_counts)
        earned += points
    return earned


def test_a_filtered_multiplier_of_a_filtered_per_unit_rule() -> None:
    coffee = Line("cof-0", 3, 3_000, "coffee", ("organic",))
    plain_coffee = Line("cof-1", 2, 2_000, "coffee")
    organic_fruit = Line("fru-0", 4, 1_000, "fruit", ("organic",))
    earned = same_both_ways(
        [
            {"id": "per-cup", "lines": {"categories": ["coffee"]},
             "effect": {"kind": "per_unit", "points": 5}},
            {"id": "organic", "priority": 200, "lines": {"labels": ["organic"]},
             "effect": {"kind": "multiplier", "percent": 300, "of": ["per-cup"]}},
        ],
        [(coffee, plain_coffee, organic_fruit), (plain_coffee,), (coffee,)],
    )  # fmt: skip
    # 25 + 30 extra (the 3 organic cups only), 10, then 15 + 30
    assert earned == 110


def test_a_stamp_rule_that_stops_only_when_it_completes_a_card() -> None:
    coffee = Line("cof-0", 1, 3_000, "coffee")
    earned = same_both_ways(
        [
            {"id": "card", "lines": {"categories": ["coffee"]}, "stop_after": True,
             "effect": {"kind": "stamp", "card": "c1"}},
            {"id": "base", "priority": 200,
             "effect": {"kind": "per_amount", "points": 1, "per_amount": 100}},
        ],
        [(coffee,)] * 4,
    )  # fmt: skip
    # 30 points for each coffee, but the third completes the card: 50 and nothing more
    assert earned == 30 + 30 + 50 + 30


ZONES = ["Europe/Stockholm", "America/Santiago", "Australia/Lord_Howe", "Pacific/Apia"]


@functools.cache
def clock_changes(zone: str) -> list[datetime]:
    """The instants (to the hour, UTC) in 2010-2012 at which `zone`'s clocks change."""
    tz, found = ZoneInfo(zone), []
    at = datetime(2010, 1, 1, tzinfo=UTC)
    while at.year < 2013:
        if (at + timedelta(hours=1)).astimezone(tz).utcoffset() != at.astimezone(tz).utcoffset():
            found.append(at)
        at += timedelta(hours=1)
    return found


@pytest.mark.parametrize("zone", ZONES)
def test_the_local_day_across_clock_changes(zone: str) -> None:
    """The replay remembers the local day it saw last, with its bounds in UTC: around each
    clock change of 2010-2012 in zones that change at midnight (Santiago), by half an hour
    (Lord Howe) or that skipped a day (Apia, 2011), an activity every quarter of an hour
    for two days either side gets the day `evaluate()` gives it (a once-a-day rule and a
    weekend rule tell)."""
    instants = [
        change + timedelta(minutes=15 * k)
        for change in clock_changes(zone)
        for k in range(-192, 193)
    ]
    spec = ProgramSpec.model_validate(
        {
            "key": "days",
            "name": "Days",
            "currency": "SEK",
            "timezone": zone,
            "rules": [
                {"id": "daily", "effect": {"kind": "fixed", "points": 1},
                 "limits": {"per_member": [{"period": "day", "times": 1}]}},
                {"id": "weekend", "when": [{"field": "now.weekday", "op": "in", "value": [6, 7]}],
                 "effect": {"kind": "fixed", "points": 10}},
            ],
        }
    )  # fmt: skip
    program = engine.compile_program(spec)
    long_counts: dict[str, tuple[int, int]] = {}
    short_counts: dict[str, tuple[int, int]] = {}
    for at in instants:
        facts = ActivityFacts("purchase", at, 1_000)
        result = engine.evaluate(spec, facts, MEMBERS[0], Counters(long_counts), dates=False)
        engine.apply_counters(long_counts, {}, result.counters)
        points = replay.points(program, facts, MEMBERS[0], short_counts, {})
        assert (points, short_counts) == (result.total_points, long_counts)
