"""A tier's (and a paid plan's) earn_multiplier_percent is paid by the engine, once: through
a `multiplier` rule `by: tier` / `by: plan` (implicit in a program that earns by `earn`
alone). Dry runs show the extra and who gave it, a return prices what is kept at the tier
and plan the purchase earned at, and a replay gives what really happened. On SQLite and
PostgreSQL; every number is worked out in the comment above it."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trofast.analytics.simulate import simulate
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger.audit import audit
from trofast.programs import repository as programs_repository
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import SpecError, validate_data
from trofast.rules import engine
from trofast.rules.engine import ActivityFacts, MemberSnapshot

Headers = dict[str, str]
Json = dict[str, Any]

TIERS: list[Json] = [
    {"id": "member", "name": "Member"},
    {
        "id": "silver",
        "name": "Silver",
        "threshold": {"spend": 500_000},
        "earn_multiplier_percent": 125,
    },
    {
        "id": "gold",
        "name": "Gold",
        "threshold": {"spend": 1_500_000},
        "earn_multiplier_percent": 150,
    },
]
PLANS: list[Json] = [
    {"id": "plus", "name": "Plus", "price": 9900, "period": "monthly",
     "earn_multiplier_percent": 200},
]  # fmt: skip
RULES: list[Json] = [
    {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
    {"id": "welcome", "on": "signup", "effect": {"kind": "fixed", "points": 50}},
    {"id": "tier-boost", "priority": 200,
     "effect": {"kind": "multiplier", "by": "tier", "of": ["base"]}},
    {"id": "plan-boost", "priority": 200,
     "effect": {"kind": "multiplier", "by": "plan", "of": ["base"]}},
]  # fmt: skip


def buy(external_id: str, member: Json, amount: int, **extra: Any) -> Json:
    return {"type": "purchase", "external_id": external_id, "member_id": member["id"],
            "amount": amount, "currency": "SEK", **extra}  # fmt: skip


def pay_plus(member: Json) -> Json:
    attributes = {"plan": "plus", "reference": f"in-{member['id']}"}
    return {"type": "event", "event_type": "membership_payment", "external_id": "pay-1",
            "member_id": member["id"], "attributes": attributes}  # fmt: skip


def set_tier(client: TestClient, admin: Headers, member: Json, tier: str) -> None:
    r = client.put(
        f"/v1/members/{member['id']}/tier",
        headers=admin,
        json={"tier": tier, "until": "2026-12-31"},
    )
    assert r.status_code == 200, r.text


def test_earn_alone_pays_the_tier_percent(
    client: TestClient,
    db: Database,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    """No `rules:`: 1 point per 10 SEK, times the tier's percent (rule `tier-multiplier`)."""
    program = make_program(tiers=TIERS)
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    base, silver, gold = enrol(pos), enrol(pos), enrol(pos)
    set_tier(client, admin, silver, "silver")
    set_tier(client, admin, gold, "gold")
    got = {}
    for name, member in (("member", base), ("silver", silver), ("gold", gold)):
        # 123.40 SEK: base 12; silver +3 (12 x 25 % = 3); gold +6
        r = client.post("/v1/activities", headers=pos, json=buy(f"p-{name}", member, 12_340))
        assert r.status_code == 201, r.text
        body = r.json()
        assert body["tier"] == name
        got[name] = {e["rule"]: e["points"] for e in body["effects"]}
    assert got == {
        "member": {"base": 12},
        "silver": {"base": 12, "tier-multiplier": 3},
        "gold": {"base": 12, "tier-multiplier": 6},
    }
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_dry_run_shows_the_extra_and_its_tier_and_plan(
    client: TestClient,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    program = make_program(tiers=TIERS, membership_plans=PLANS, rules=RULES)
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    member = enrol(pos)
    set_tier(client, admin, member, "gold")
    assert client.post("/v1/activities", headers=pos, json=pay_plus(member)).status_code == 201
    r = client.post("/v1/activities?dry_run=true", headers=pos, json=buy("d1", member, 20_990))
    assert r.status_code == 200, r.text
    body = r.json()
    # base 20 990 öre -> 20; gold 150 %: +10; plan plus 200 %: +20. Each adds its extra to
    # the base (they do not compound): 20 + 10 + 20 = 50.
    assert body["dry_run"] is True
    assert (body["points"], body["tier"], body["plan"]) == (50, "gold", "plus")
    assert {e["rule"]: e["points"] for e in body["effects"]} == {
        "base": 20,
        "tier-boost": 10,
        "plan-boost": 20,
    }
    assert body["notes"] == ["plan-boost: plan plus: 200 %", "tier-boost: tier gold: 150 %"]
    # The signup bonus is not in `of`: never multiplied.


def test_a_return_keeps_the_tier_and_plan_it_earned_at(
    client: TestClient,
    db: Database,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    program = make_program(tiers=TIERS, membership_plans=PLANS, rules=RULES)
    pos, admin = key_for(program, "pos"), key_for(program, "admin")
    member = enrol(pos)
    set_tier(client, admin, member, "silver")
    assert client.post("/v1/activities", headers=pos, json=pay_plus(member)).status_code == 201
    # 400 SEK as silver on plus: base 40, tier +10, plan +40 = 90.
    r = client.post("/v1/activities", headers=pos, json=buy("p1", member, 40_000))
    assert r.json()["points"] == 90
    # Later the member is gold and the plan has lapsed (a month and more, no grace).
    set_tier(client, admin, member, "gold")
    clock.advance(timedelta(days=40))
    back = {"type": "return", "external_id": "r1", "original_external_id": "p1", "amount": 10_000}
    r = client.post("/v1/activities", headers=pos, json=back)
    assert r.status_code == 201, r.text
    # Kept: 300 SEK priced as silver on plus: 30 + 7 (7.5 down) + 30 = 67; back: 90 - 67 = 23.
    assert r.json()["points"] == -23
    with db.read() as conn:
        assert audit(conn, program.program_id) == []


def test_replay_gives_the_multiplied_points(
    client: TestClient,
    db: Database,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    key_for: Callable[..., Headers],
    enrol: Callable[..., Json],
) -> None:
    """`trofast simulate` of the program as it is gives what really happened: the replayed
    tier multiplies exactly as the live one did (silver reached on the first purchase)."""
    program = make_program(tiers=TIERS, rules=RULES[:3])
    pos = key_for(program, "pos")
    member = enrol(pos)
    clock.set(datetime(2026, 3, 2, 12, tzinfo=UTC))
    points = []
    for n, amount in enumerate([600_000, 12_345, 80_000]):
        clock.advance(timedelta(days=1))
        body = buy(f"s{n}", member, amount, occurred_at=clock.now().isoformat())
        points.append(client.post("/v1/activities", headers=pos, json=body).json()["points"])
    # 600 at member (then silver); 12 + 3; 80 + 20
    assert points == [600, 15, 100]
    with db.read() as conn:
        result = simulate(
            conn,
            program.program_id,
            program.spec,
            datetime(2026, 3, 1, tzinfo=UTC),
            datetime(2026, 4, 1, tzinfo=UTC),
        )
    march = next(m for m in result.months if m.month == "2026-03")
    assert (march.actual_points, march.simulated_points) == (715, 715)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"tiers": TIERS, "rules": RULES[:2]}, "tiers.1.earn_multiplier_percent"),
        (
            {"membership_plans": PLANS, "rules": RULES[:2]},
            "membership_plans.0.earn_multiplier_percent",
        ),
        ({"rules": RULES[:3]}, "rules.2.effect.by"),
        (
            {
                "tiers": TIERS,
                "rules": [
                    RULES[0],
                    {
                        "id": "x",
                        "effect": {
                            "kind": "multiplier",
                            "percent": 150,
                            "by": "tier",
                            "of": ["base"],
                        },
                    },
                ],
            },
            "rules.1.effect",
        ),
    ],
    ids=["tier-unpaid", "plan-unpaid", "no-tiers", "percent-and-by"],
)
def test_a_promised_percent_must_be_paid(fields: Json, path: str) -> None:
    document = {"key": "m-test", "name": "M", "currency": "SEK", "timezone": "UTC", **fields}
    with pytest.raises(SpecError) as caught:
        validate_data(document)
    assert any(where.startswith(path) for where, _ in caught.value.errors), caught.value.errors


def test_a_version_applied_before_still_loads(
    db: Database, clock: FixedClock, make_program: Callable[..., ProgramVersion]
) -> None:
    """A version stored before the percent had to be paid (tier.name rules with their own
    percent) reads back as it was: the new check is for new documents only."""
    program = make_program(tiers=TIERS, rules=RULES[:3])
    old_style = {
        **program.spec.model_dump(mode="json"),
        "rules": [
            RULES[0],
            {"id": "gold", "priority": 200, "when": [{"field": "tier.name", "value": "gold"}],
             "effect": {"kind": "multiplier", "percent": 150, "of": ["base"]}},
        ],
    }  # fmt: skip
    with pytest.raises(SpecError):
        validate_data(old_style)
    with db.write() as conn:
        programs_repository.insert_version(conn, program.program_id, 2, old_style, clock.now())
    with db.read() as conn:
        loaded = programs.current(conn, program.program_id)
    assert loaded.version == 2
    gold = MemberSnapshot(id=1, status="active", tier="gold")
    facts = ActivityFacts("purchase", clock.now(), 10_000, "SEK")
    assert engine.evaluate(loaded.spec, facts, gold).total_points == 10 + 5
