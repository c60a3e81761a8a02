"""Tiers on SQLite and PostgreSQL with an injected clock: the program document's checks,
upgrades at once (history, event, welcome points once per tier), the metrics, the period-end
review (one step, recalculate, grace, manual floor, idempotent, chunked) and the windows."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from trofast.activities import service as activities
from trofast.activities.schemas import EventIn, PurchaseIn, ReturnIn
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.members.schemas import MemberIn
from trofast.notify import outbox
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import SpecError, validate_data
from trofast.tiers import service as tiers
from trofast.tiers.document import Metric, TierQualification
from trofast.tiers.models import member_tiers
from trofast.worker import jobs

STOCKHOLM = ZoneInfo("Europe/Stockholm")
_serial = itertools.count(1)

TIERS: list[dict[str, Any]] = [
    {"id": "member", "name": {"en": "Member", "sv": "Medlem"}},
    {
        "id": "silver",
        "name": {"en": "Silver", "sv": "Silver"},
        "threshold": {"spend": 500_000},
        "earn_multiplier_percent": 125,
        "perks": ["free_shipping"],
        "welcome_points": 200,
    },
    {
        "id": "gold",
        "name": {"en": "Gold", "sv": "Guld"},
        "threshold": {"spend": 1_500_000},
        "earn_multiplier_percent": 150,
        "perks": ["free_shipping", "vip_service"],
        "welcome_points": 500,
    },
]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM).astimezone(UTC)  # type: ignore[misc]


class Shop:
    """Members, purchases and events through the services; `ingest` moves tiers itself."""

    def __init__(self, db: Database, clock: FixedClock, program: ProgramVersion) -> None:
        self.db, self.clock, self.program = db, clock, program

    def enrol(self) -> int:
        with self.db.write() as conn:
            data = MemberIn(email=f"tier{next(_serial)}@example.com")
            return members.enrol(conn, self.program, data, self.clock.now()).id

    def send(self, member_id: int, data: Any) -> tiers.Change | None:
        now = self.clock.now()
        with self.db.write() as conn:
            result = activities.ingest(conn, self.program, data, now, "test")
        if result.new_tier is None:
            return None
        return tiers.Change(member_id, str(result.tier), result.new_tier, "upgrade")

    def buy(self, member_id: int, amount: int) -> tiers.Change | None:
        data = PurchaseIn(
            type="purchase",
            external_id=f"r{next(_serial)}",
            member_id=member_id,
            amount=amount,
            currency="SEK",
        )
        self.last_receipt = data.external_id
        return self.send(member_id, data)

    def give_back(self, member_id: int, receipt: str, amount: int) -> tiers.Change | None:
        data = ReturnIn(
            type="return",
            external_id=f"ret{next(_serial)}",
            original_external_id=receipt,
            amount=amount,
        )
        return self.send(member_id, data)

    def event(self, member_id: int, event_type: str) -> tiers.Change | None:
        data = EventIn(
            type="event",
            external_id=f"e{next(_serial)}",
            member_id=member_id,
            event_type=event_type,
        )
        return self.send(member_id, data)

    def tier(self, member_id: int) -> str | None:
        with self.db.read() as conn:
            return tiers.tier_of(conn, self.program.program_id, member_id)

    def row(self, member_id: int) -> Any:
        with self.db.read() as conn:
            return conn.execute(
                select(member_tiers).where(
                    member_tiers.c.program_id == self.program.program_id,
                    member_tiers.c.member_id == member_id,
                )
            ).one()

    def view(self, member_id: int) -> Any:
        with self.db.read() as conn:
            member = members.resolve(conn, self.program.program_id, str(member_id))
            return tiers.view(conn, self.program, member, self.clock.now(), None)

    def history(self, member_id: int) -> list[tuple[str | None, str, str]]:
        with self.db.read() as conn:
            page = tiers.history(conn, self.program, member_id, 100)
        return [(h.from_tier, h.to_tier, h.reason) for h in reversed(page.items)]

    def events(self) -> list[dict[str, Any]]:
        with self.db.read() as conn:
            page = outbox.list_page(conn, self.program.program_id, "tier.changed", None, 500)
        return [e.payload for e in reversed(page.items)]

    def points(self, member_id: int) -> int:
        with self.db.read() as conn:
            account = ledger_reads.member_account(conn, member_id, ledger.POINTS)
            assert account is not None
            return ledger.member_balance(conn, account, self.clock.now())["lifetime_earned"]

    def review(self, limit: int = tiers.REVIEW_CHUNK) -> tiers.Review:
        total = tiers.Review()
        after: int | None = 0
        while after is not None:
            with self.db.write() as conn:
                done, after = tiers.review(conn, self.program, self.clock.now(), after, limit)
            total.reviewed += done.reviewed
            total.kept += done.kept
            total.downgraded += done.downgraded
            total.graced += done.graced
            total.changes += done.changes
        return total


@pytest.fixture
def shop(
    db: Database, clock: FixedClock, make_program: Callable[..., ProgramVersion]
) -> Callable[..., Shop]:
    def make(**qualification: Any) -> Shop:
        fields: dict[str, Any] = {"tiers": TIERS, "event_types": ["flight"]}
        if qualification:
            fields["tier_qualification"] = qualification
        return Shop(db, clock, make_program(**fields))

    return make


# -- the document ----------------------------------------------------------------------------


def _document(**fields: Any) -> dict[str, Any]:
    return {"key": "tiers-doc", "name": "T", "currency": "SEK", "tiers": TIERS, **fields}


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (lambda d: d["tiers"].append({**TIERS[1]}), "tiers.3.id", "used twice"),
        (
            lambda d: d["tiers"].__setitem__(0, {**TIERS[0], "threshold": {"spend": 1}}),
            "tiers.0.threshold",
            "entry",
        ),
        (
            lambda d: d["tiers"].__setitem__(1, {**TIERS[1], "threshold": {}}),
            "tiers.1.threshold",
            "give a threshold for spend",
        ),
        (
            lambda d: d["tiers"].__setitem__(2, {**TIERS[2], "threshold": {"spend": 1000}}),
            "tiers.2.threshold.spend",
            "lower than 'silver'",
        ),
        (
            lambda d: d["tiers"].__setitem__(2, {**TIERS[2], "threshold": {"spend": 500_000}}),
            "tiers.2.threshold",
            "the same as 'silver'",
        ),
        (
            lambda d: d["tiers"].__setitem__(
                1, {**TIERS[1], "threshold": {"spend": 1, "visits": 2}}
            ),
            "tiers.1.threshold",
            "visits is not a metric",
        ),
        (
            lambda d: d.update(tier_qualification={"metrics": ["flights"]}),
            "tier_qualification.flight_event",
            "name the event type",
        ),
        (
            lambda d: d.update(tier_qualification={"metrics": ["spend"], "flight_event": "flight"}),
            "tier_qualification.flight_event",
            "declare it in event_types",
        ),
        (
            lambda d: d.update(
                rewards=[
                    {
                        "id": "lounge",
                        "type": "custom",
                        "name": "Lounge",
                        "cost": 10,
                        "eligible": {"tiers": ["platinum"]},
                    }
                ]
            ),
            "rewards.0.eligible.tiers.0",
            "no tier 'platinum'",
        ),
        (
            lambda d: d.update(tier_qualification={"metrics": ["spend", "spend"]}),
            "tier_qualification",
            "named twice",
        ),
        (
            lambda d: d.update(tier_qualification={"window": {"rolling_months": 0}}),
            "tier_qualification.window",
            "",
        ),
    ],
)
def test_document_cross_checks_name_the_path(
    change: Callable[[dict[str, Any]], None], path: str, words: str
) -> None:
    document = _document()
    document["tiers"] = [dict(t) for t in TIERS]
    change(document)
    with pytest.raises(SpecError) as caught:
        validate_data(document)
    paths = [p for p, _ in caught.value.errors]
    assert any(p.startswith(path) for p in paths), caught.value.errors
    assert words in str(caught.value)


def test_document_defaults_and_windows() -> None:
    spec = validate_data(_document())
    assert spec.tier_qualification == TierQualification()
    assert spec.tier_qualification.window == "calendar_year"
    assert spec.tier("gold") is not None and spec.tier("platinum") is None
    rolling = validate_data(
        _document(tier_qualification={"window": {"rolling_months": 12}, "grace_days": 30})
    )
    assert rolling.tier_qualification.rolling_months == 12
    assert validate_data({"key": "no-tiers", "name": "N", "currency": "SEK"}).tiers == []


# -- moving up --------------------------------------------------------------------------------


def test_upgrade_at_once_with_history_event_and_welcome_points(shop: Callable[..., Shop]) -> None:
    s = shop()
    m = s.enrol()
    assert s.tier(m) == "member"
    assert s.buy(m, 300_000) is None
    assert s.tier(m) == "member"
    change = s.buy(m, 200_000)  # 5 000 SEK this year: Silver, at once
    assert change == tiers.Change(m, "member", "silver", "upgrade")
    assert s.tier(m) == "silver"
    row = s.row(m)
    assert row.since == s.clock.now()
    # Reached in 2026: secured through 2027, the period reviewed at its end.
    assert row.period_start == local(2027, 1, 1)
    assert row.qualified_until == local(2028, 1, 1)
    assert s.history(m) == [("member", "silver", "upgrade")]
    [event] = s.events()
    assert event["member_id"] == m and event["from"] == "member" and event["to"] == "silver"
    # Points from the purchases (1 per 10 SEK) plus Silver's 200 welcome points.
    assert s.points(m) == 500 + 200
    # A return lowers the spend, but tiers never go down on an activity.
    assert s.give_back(m, s.last_receipt, 200_000) is None
    assert s.tier(m) == "silver"


def test_jump_straight_to_gold_pays_golds_welcome_only(shop: Callable[..., Shop]) -> None:
    s = shop()
    m = s.enrol()
    assert s.buy(m, 1_600_000) == tiers.Change(m, "member", "gold", "upgrade")
    assert s.points(m) == 1600 + 500
    assert s.history(m) == [("member", "gold", "upgrade")]
    # Nothing left to do for a secured top tier: no further writes or events.
    assert s.buy(m, 100) is None
    assert len(s.events()) == 1


def test_welcome_points_once_per_tier_even_after_a_downgrade(
    shop: Callable[..., Shop], clock: FixedClock
) -> None:
    s = shop()
    m = s.enrol()
    s.buy(m, 500_000)
    clock.set(local(2028, 1, 1, 0, 5))  # 2027 had no purchases: back to member
    s.review()
    assert s.tier(m) == "member"
    s.buy(m, 500_000)
    assert s.tier(m) == "silver"
    assert s.points(m) == 500 + 200 + 500  # the second Silver brings no welcome points
    assert [h[2] for h in s.history(m)] == ["upgrade", "downgrade", "upgrade"]


def test_returns_count_against_spend(shop: Callable[..., Shop]) -> None:
    s = shop()
    m = s.enrol()
    s.buy(m, 400_000)
    s.give_back(m, s.last_receipt, 100_000)
    assert s.buy(m, 150_000) is None  # 4 000 - 1 000 + 1 500 = 4 500 SEK: not yet
    assert s.buy(m, 50_000) is not None


def test_no_tiers_no_work(db: Database, clock: FixedClock, make_program: Any) -> None:
    s = Shop(db, clock, make_program())
    m = s.enrol()
    assert s.buy(m, 5_000_000) is None
    assert s.tier(m) is None
    with db.read() as conn:
        assert tiers.tiers_of(conn, s.program.spec, s.program.program_id, [m]) == {}


@pytest.mark.parametrize(
    ("qualification", "thresholds", "act", "expected"),
    [
        (
            {"metrics": ["visits"]},
            [3, 6],
            lambda s, m: [s.event(m, "store_visit") for _ in range(3)],
            "silver",
        ),
        (
            {"metrics": ["flights"], "flight_event": "flight"},
            [2, 4],
            lambda s, m: [s.event(m, "flight") for _ in range(4)],
            "gold",
        ),
        (
            {"metrics": ["purchases"]},
            [2, 5],
            lambda s, m: [s.buy(m, 100) for _ in range(2)],
            "silver",
        ),
        ({"metrics": ["points"]}, [100, 300], lambda s, m: [s.buy(m, 100_000)], "silver"),
        (
            {"metrics": ["spend", "purchases"], "combine": "all"},
            [(100_000, 3), (200_000, 6)],
            lambda s, m: [s.buy(m, 300_000)],
            "member",
        ),
        (
            {"metrics": ["spend", "purchases"], "combine": "any"},
            [(100_000, 3), (200_000, 6)],
            lambda s, m: [s.buy(m, 300_000)],
            "gold",
        ),
    ],
)
def test_metrics(
    db: Database,
    clock: FixedClock,
    make_program: Callable[..., ProgramVersion],
    qualification: dict[str, Any],
    thresholds: list[Any],
    act: Callable[[Shop, int], Any],
    expected: str,
) -> None:
    metrics = qualification["metrics"]
    levels = []
    for tier, values in zip(TIERS[1:], thresholds, strict=True):
        values = values if isinstance(values, tuple) else (values,)
        levels.append({**tier, "threshold": dict(zip(metrics, values, strict=True))})
    s = Shop(
        db,
        clock,
        make_program(
            tiers=[TIERS[0], *levels], tier_qualification=qualification, event_types=["flight"]
        ),
    )
    m = s.enrol()
    act(s, m)
    assert s.tier(m) == expected


def test_points_metric_of_purchases_only(
    db: Database, clock: FixedClock, make_program: Callable[..., ProgramVersion]
) -> None:
    rules = [
        {"id": "base", "effect": {"kind": "per_amount", "points": 1, "per_amount": 1000}},
        {"id": "visit", "on": "store_visit", "effect": {"kind": "fixed", "points": 80}},
        {
            "id": "boost",
            "priority": 200,
            "effect": {"kind": "multiplier", "by": "tier", "of": ["base"]},
        },
    ]
    levels = [
        TIERS[0],
        {**TIERS[1], "threshold": {"points": 100}},
        {**TIERS[2], "threshold": {"points": 1000}},
    ]
    for source, expected in (("all", "silver"), ("purchases", "member")):
        s = Shop(
            db,
            clock,
            make_program(
                rules=rules,
                tiers=levels,
                tier_qualification={"metrics": ["points"], "points": source},
            ),
        )
        m = s.enrol()
        s.buy(m, 50_000)  # 50 points from a purchase
        s.event(m, "store_visit")  # 80 points from a visit
        assert s.tier(m) == expected, source
        if source == "all":
            # The welcome points are no activity's points: they do not count.
            with db.read() as conn:
                metrics = tiers.repository.member_metrics(
                    conn,
                    s.program.program_id,
                    m,
                    local(2026, 1, 1),
                    local(2027, 1, 1),
                    s.program.spec.tier_qualification,
                )
            assert metrics[Metric.points] == 130


# -- the period-end review --------------------------------------------------------------------


def test_one_step_downgrade_at_period_end_is_idempotent(
    shop: Callable[..., Shop], clock: FixedClock
) -> None:
    s = shop()
    gold, silver, idle = s.enrol(), s.enrol(), s.enrol()
    s.buy(gold, 1_500_000)
    s.buy(silver, 500_000)
    clock.set(local(2027, 12, 31, 23, 59))
    assert s.review().reviewed == 0  # secured through 2027
    clock.set(local(2028, 1, 1, 0, 1))
    s.buy(silver, 500_000)  # requalified in 2028: secured through 2029
    done = s.review()
    assert (done.reviewed, done.downgraded) == (1, 1)
    assert s.tier(gold) == "silver" and s.tier(silver) == "silver" and s.tier(idle) == "member"
    row = s.row(gold)
    assert row.since == clock.now()
    assert (row.period_start, row.qualified_until) == (local(2028, 1, 1), local(2029, 1, 1))
    assert s.review().reviewed == 0  # a second run changes nothing
    assert s.history(gold)[-1] == ("gold", "silver", "downgrade")
    clock.set(local(2029, 1, 1, 3))
    assert s.review().downgraded == 1
    assert s.tier(gold) == "member"
    assert s.row(gold).qualified_until is None
    # The silver member requalified in January 2028: secured through 2029, reviewed after.
    assert s.tier(silver) == "silver"
    clock.set(local(2030, 1, 1, 3))
    s.review()
    assert s.tier(silver) == "member"
    assert [e["to"] for e in s.events() if e["member_id"] == gold] == ["gold", "silver", "member"]


def test_kept_when_the_period_requalifies(shop: Callable[..., Shop], clock: FixedClock) -> None:
    s = shop()
    m = s.enrol()
    s.buy(m, 1_500_000)
    clock.set(local(2027, 6, 1))
    assert s.buy(m, 1_500_000) is None  # Gold again in 2027: secured through 2028
    assert s.row(m).qualified_until == local(2029, 1, 1)
    clock.set(local(2028, 1, 2))
    done = s.review()
    assert (done.reviewed, done.kept) == (0, 0)  # its period is not over: nothing to review
    assert s.tier(m) == "gold"


def test_recalculate_moves_down_several_tiers(shop: Callable[..., Shop], clock: FixedClock) -> None:
    s = shop(downgrade="recalculate")
    gold, gold_to_silver = s.enrol(), s.enrol()
    s.buy(gold, 1_500_000)
    s.buy(gold_to_silver, 1_500_000)
    clock.set(local(2027, 3, 1))
    s.buy(gold_to_silver, 600_000)
    clock.set(local(2028, 1, 1, 1))
    assert s.review().downgraded == 2
    assert s.tier(gold) == "member" and s.tier(gold_to_silver) == "silver"


def test_grace_days_delay_the_downgrade(shop: Callable[..., Shop], clock: FixedClock) -> None:
    s = shop(grace_days=30)
    late, saved = s.enrol(), s.enrol()
    s.buy(late, 1_500_000)
    s.buy(saved, 1_500_000)
    clock.set(local(2028, 1, 1, 2))
    done = s.review()
    assert (done.graced, done.downgraded) == (2, 0)
    assert s.tier(late) == "gold" and s.history(late)[-1] == ("gold", "gold", "grace")
    assert s.view(late).grace_until == date(2028, 1, 30)
    assert s.review().reviewed == 0  # in grace: not due again
    clock.set(local(2028, 1, 20))
    s.buy(saved, 1_500_000)  # requalifies in the grace days: secured through 2029
    assert s.row(saved).grace_until is None
    clock.set(local(2028, 1, 31, 0, 1))
    done = s.review()
    assert (done.reviewed, done.downgraded) == (1, 1)
    assert s.tier(late) == "silver" and s.tier(saved) == "gold"
    assert s.review().reviewed == 0


def test_manual_floor_holds_until_its_date(shop: Callable[..., Shop], clock: FixedClock) -> None:
    s = shop()
    m = s.enrol()
    with s.db.write() as conn:
        member = members.resolve(conn, s.program.program_id, str(m))
        out = tiers.set_manual(
            conn, s.program, member, "gold", date(2028, 6, 30), clock.now(), "admin"
        )
    assert out.tier == "gold" and out.floor is not None and out.floor.until == date(2028, 6, 30)
    assert s.history(m) == [("member", "gold", "manual")]
    assert s.points(m) == 500  # a manual tier is reached too: its welcome points
    # Reviewed at the end of the current window (2026), held by the floor, twice over.
    clock.set(local(2027, 1, 1, 1))
    assert s.review().kept == 1
    clock.set(local(2028, 1, 1, 1))
    assert s.review().kept == 1
    assert s.tier(m) == "gold"
    clock.set(local(2029, 1, 1, 1))  # the floor ended on 30 June 2028
    assert s.review().downgraded == 1
    assert s.tier(m) == "silver"


def test_review_in_chunks_and_from_the_worker(
    shop: Callable[..., Shop], clock: FixedClock, db: Database
) -> None:
    s = shop()
    ids = [s.enrol() for _ in range(7)]
    for m in ids:
        s.buy(m, 500_000)
    clock.set(local(2028, 1, 1, 1))
    done = s.review(limit=3)
    assert (done.reviewed, done.downgraded) == (7, 7)
    assert {s.tier(m) for m in ids} == {"member"}
    other = shop()
    more = [other.enrol() for _ in range(3)]
    clock.set(local(2028, 2, 1))
    for m in more:
        other.buy(m, 1_500_000)
    clock.set(local(2030, 1, 1, 1))
    report = jobs.run_due(db, clock, [other.program.program_id])
    assert report.tier_changes == 3
    assert {other.tier(m) for m in more} == {"silver"}
    assert jobs.run_due(db, clock, [other.program.program_id]).tier_changes == 0


def test_rolling_window(shop: Callable[..., Shop], clock: FixedClock) -> None:
    s = shop(window={"rolling_months": 12})
    m = s.enrol()
    s.buy(m, 500_000)  # 15 January 2026
    row = s.row(m)
    assert (row.period_start, row.qualified_until) == (local(2026, 1, 16), local(2027, 1, 16))
    view = s.view(m)
    assert view.window_from == date(2025, 1, 16) and view.window_until == date(2026, 1, 15)
    assert view.next is not None and view.next.needed[0].by is None
    clock.set(local(2026, 6, 1))
    s.buy(m, 500_000)  # the last 12 months reach Silver again: secured 12 months on
    assert s.row(m).qualified_until == local(2027, 6, 2)
    clock.set(local(2027, 6, 2, 0, 1))
    s.review()
    assert s.tier(m) == "member"


def test_anniversary_window(shop: Callable[..., Shop], clock: FixedClock) -> None:
    s = shop(window="anniversary_year")
    clock.set(local(2025, 3, 10, 12))
    m = s.enrol()
    clock.set(local(2026, 1, 15, 12))
    s.buy(m, 500_000)
    view = s.view(m)
    assert (view.window_from, view.window_until) == (date(2025, 3, 10), date(2026, 3, 9))
    row = s.row(m)
    assert (row.period_start, row.qualified_until) == (local(2026, 3, 10), local(2027, 3, 10))
    assert view.secured_until == date(2027, 3, 9)


def test_window_helpers() -> None:
    q = TierQualification()
    now = local(2026, 12, 31, 23, 30)  # still 2026 in Stockholm, 2026-12-31T22:30Z
    assert tiers.window(q, STOCKHOLM, now, None) == (local(2026, 1, 1), local(2027, 1, 1))
    leap = TierQualification(window="anniversary_year")
    enrolled = local(2024, 2, 29, 12)
    start, end = tiers.window(leap, STOCKHOLM, local(2026, 5, 1), enrolled)
    assert (start, end) == (local(2026, 2, 28), local(2027, 2, 28))
    assert tiers.following(q, local(2027, 1, 1), STOCKHOLM) == local(2028, 1, 1)
    assert local(2027, 1, 1) - local(2026, 12, 31) == timedelta(days=1)


def test_calendar_quarters_qualify_and_review_each_quarter(
    shop: Callable[..., Shop], clock: FixedClock
) -> None:
    """A quarter's sales target: reached in Q1, secured through Q2, reviewed at Q2's end."""
    s = shop(window="calendar_quarter")
    m = s.enrol()
    clock.set(local(2026, 3, 30, 12, 0))
    assert s.buy(m, 600_000) == tiers.Change(m, "member", "silver", "upgrade")
    assert (s.row(m).period_start, s.row(m).qualified_until) == (
        local(2026, 4, 1),
        local(2026, 7, 1),
    )
    clock.set(local(2026, 4, 2, 12, 0))  # a new quarter: March's sales no longer count
    assert s.view(m).metrics == {"spend": 0}
    s.buy(m, 200_000)
    clock.set(local(2026, 7, 1, 0, 30))
    done = s.review()
    assert (done.reviewed, done.downgraded) == (1, 1)  # Q2: 2,000 SEK of a 5,000 target
    assert s.tier(m) == "member"
