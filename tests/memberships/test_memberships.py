"""Paid memberships on SQLite and PostgreSQL with an injected clock: the plans in the program
document, the state machine driven by the payment provider's events (ingested as activities,
then applied by `on_event`), the lapse job, the outbox events and the refusal of card data."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from trofast.activities import repository as activity_reads
from trofast.activities import service as activities
from trofast.activities.schemas import EventIn
from trofast.kit.clock import FixedClock
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.members import service as members
from trofast.members.schemas import MemberIn
from trofast.memberships import service as memberships
from trofast.memberships.models import memberships as memberships_table
from trofast.memberships.schemas import Status
from trofast.notify import outbox
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import SpecError, validate_data
from trofast.worker import jobs

STOCKHOLM = ZoneInfo("Europe/Stockholm")
_serial = itertools.count(1)

PLANS: list[dict[str, Any]] = [
    {
        "id": "plus",
        "name": {"en": "Plus", "sv": "Plus"},
        "price": 14_900,
        "period": "monthly",
        "trial_days": 14,
        "grace_days": 7,
        "perks": ["free_shipping", "member_prices"],
        "earn_multiplier_percent": 200,
        "rewards": ["smoothie"],
    },
    {"id": "yearly", "name": "Yearly", "price": 149_000, "period": "yearly"},
]
REWARDS = [{"id": "smoothie", "type": "custom", "name": "Smoothie", "cost": 100}]


def local(*args: int) -> datetime:
    return datetime(*args, tzinfo=STOCKHOLM).astimezone(UTC)  # type: ignore[misc]


class Club:
    """A member's payment provider: its events are ingested as activities, which apply them
    (`memberships.on_event`) in the same transaction, at the clock's time."""

    def __init__(self, db: Database, clock: FixedClock, program: ProgramVersion) -> None:
        self.db, self.clock, self.program = db, clock, program

    def enrol(self) -> int:
        with self.db.write() as conn:
            data = MemberIn(email=f"club{next(_serial)}@example.com")
            return members.enrol(conn, self.program, data, self.clock.now()).id

    def at(self, when: datetime) -> Club:
        self.clock.set(when)
        return self

    def send(self, member_id: int, event_type: str, **attributes: Any) -> Any:
        now = self.clock.now()
        external_id = f"psp{next(_serial)}"
        self.last_external_id = external_id
        data = EventIn(
            type="event",
            external_id=external_id,
            member_id=member_id,
            event_type=event_type,
            occurred_at=now,
            attributes=attributes,
        )
        with self.db.write() as conn:
            return activities.ingest(conn, self.program, data, now, "psp").membership

    def pay(self, member_id: int, reference: str, plan: str = "plus", **extra: Any) -> Any:
        return self.send(member_id, "membership_payment", plan=plan, reference=reference, **extra)

    def view(self, member_id: int) -> Any:
        with self.db.read() as conn:
            member = members.resolve(conn, self.program.program_id, str(member_id))
            return memberships.view(conn, self.program, member, self.clock.now(), None)

    def status(self, member_id: int) -> Status:
        return Status(self.view(member_id).status)

    def plan(self, member_id: int) -> str | None:
        with self.db.read() as conn:
            plan = memberships.active_plan(
                conn, self.program.program_id, member_id, self.clock.now()
            )
        return None if plan is None else plan.id

    def lapse(self) -> int:
        return jobs.lapse_memberships(self.db, self.clock, [self.program.program_id])

    def history(self, member_id: int) -> list[tuple[str, str]]:
        with self.db.read() as conn:
            page = memberships.history(conn, self.program, member_id, 100)
        return [(h.kind, h.plan) for h in reversed(page.items)]

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        with self.db.read() as conn:
            page = outbox.list_page(conn, self.program.program_id, None, None, 500)
        return [(e.topic, e.payload) for e in reversed(page.items) if e.topic.startswith("mem")]

    def row(self, member_id: int) -> Any:
        with self.db.read() as conn:
            return conn.execute(
                select(memberships_table).where(
                    memberships_table.c.program_id == self.program.program_id,
                    memberships_table.c.member_id == member_id,
                )
            ).one()


@pytest.fixture
def club(db: Database, clock: FixedClock, make_program: Callable[..., ProgramVersion]) -> Club:
    return Club(db, clock, make_program(membership_plans=PLANS, rewards=REWARDS))


def test_trial_renewal_grace_and_lapse(club: Club) -> None:
    m = club.enrol()
    start = local(2026, 1, 15, 11, 0)
    assert club.clock.now() == start
    assert club.status(m) is Status.none and club.plan(m) is None

    # A free sign-up (amount 0) starts the plan's trial, once per member.
    started = club.pay(m, "sub1-inv0", amount=0)
    assert (started.kind, started.plan) == ("started", "plus")
    trial_end = local(2026, 1, 29, 11, 0)
    view = club.view(m)
    assert view.status is Status.trial and view.trial_until == trial_end
    assert view.paid_until == trial_end and view.renews and view.renews_at == trial_end
    assert view.ends_at == local(2026, 2, 5, 11, 0)  # seven grace days after it
    assert view.perks == ["free_shipping", "member_prices"]
    assert (view.earn_multiplier_percent, view.rewards) == (200, ["smoothie"])
    assert (view.price, view.currency, view.period) == (14_900, "SEK", "monthly")
    assert club.plan(m) == "plus"

    # The first charge at the trial's end pays the month after it (29 Jan + 1 month: the
    # month's last day, 28 Feb); a replay of the same payment changes nothing.
    club.at(trial_end - timedelta(seconds=1))
    assert club.status(m) is Status.trial
    club.at(trial_end)
    assert club.status(m) is Status.grace  # the first charge is due
    renewed = club.pay(m, "sub1-inv1", amount=14_900)
    assert renewed.kind == "renewed" and renewed.paid_until == local(2026, 2, 28, 11, 0)
    assert club.pay(m, "sub1-inv1", amount=14_900) is None
    assert club.view(m).paid_until == local(2026, 2, 28, 11, 0)
    assert club.view(m).status is Status.active

    # The period ends without a payment: grace, still the member's plan.
    club.at(local(2026, 2, 28, 12, 0))
    view = club.view(m)
    assert view.status is Status.grace and view.grace_until == local(2026, 3, 7, 11, 0)
    assert club.plan(m) == "plus"
    # The provider says the charge failed (twice): grace keeps its end, one event.
    club.at(local(2026, 3, 1, 9, 0))
    assert club.send(m, "payment_failed", plan="plus").kind == "payment_failed"
    club.at(local(2026, 3, 4, 9, 0))
    assert club.send(m, "payment_failed") is None
    assert club.view(m).grace_until == local(2026, 3, 7, 11, 0)

    # The job lapses it when grace ends, not before, and once.
    club.at(local(2026, 3, 7, 10, 59))
    assert club.lapse() == 0
    assert club.status(m) is Status.grace
    club.at(local(2026, 3, 7, 11, 0))
    assert club.status(m) is Status.lapsed and club.plan(m) is None  # even before the job
    assert club.lapse() == 1
    assert club.lapse() == 0
    view = club.view(m)
    assert view.status is Status.lapsed and view.lapsed_at == local(2026, 3, 7, 11, 0)
    assert (view.perks, view.rewards, view.earn_multiplier_percent) == ([], [], 100)
    assert not view.renews and view.renews_at is None and view.ends_at is None
    # Events after the lapse change nothing.
    assert club.send(m, "payment_failed") is None
    assert club.send(m, "membership_cancelled") is None

    # Paying again starts a new membership, without a second trial.
    club.at(local(2026, 3, 10, 8, 0))
    again = club.pay(m, "sub2-inv1", amount=14_900)
    assert again.kind == "started" and again.paid_until == local(2026, 4, 10, 8, 0)
    view = club.view(m)
    assert view.status is Status.active and view.trial_until is None
    assert view.started_at == local(2026, 3, 10, 8, 0)

    assert club.history(m) == [
        ("started", "plus"),
        ("renewed", "plus"),
        ("payment_failed", "plus"),
        ("lapsed", "plus"),
        ("started", "plus"),
    ]
    topics = [topic for topic, _ in club.events()]
    assert topics == [
        "membership.started",
        "membership.renewed",
        "membership.payment_failed",
        "membership.lapsed",
        "membership.started",
    ]
    lapsed = club.events()[3][1]
    assert lapsed == {
        "member_id": m,
        "plan": "plus",
        "at": local(2026, 3, 7, 11, 0).isoformat(),
        "paid_until": local(2026, 2, 28, 11, 0).isoformat(),
    }


def test_payment_in_grace_renews_from_the_missed_period(club: Club) -> None:
    """A late payment pays on from where the paid period ended (the grace days were the
    member's), and clears the failure."""
    m = club.enrol()
    club.pay(m, "a-1", plan="yearly", amount=149_000)
    assert club.view(m).paid_until == local(2027, 1, 15, 11, 0)
    assert club.view(m).trial_until is None  # the yearly plan has no trial
    assert club.view(m).ends_at == local(2027, 1, 15, 11, 0)  # no grace days
    club.at(local(2027, 1, 10, 0, 0))
    club.send(m, "payment_failed")
    assert club.status(m) is Status.grace
    club.at(local(2027, 1, 14, 0, 0))
    club.pay(m, "a-2", plan="yearly", amount=149_000)
    view = club.view(m)
    assert view.status is Status.active and view.paid_until == local(2028, 1, 15, 11, 0)
    club.at(local(2028, 1, 15, 11, 0))
    assert club.lapse() == 1 and club.status(m) is Status.lapsed


def test_trial_without_payment_lapses_after_grace(club: Club) -> None:
    m = club.enrol()
    club.pay(m, "t-0", amount=0)
    club.at(local(2026, 1, 29, 11, 0))
    assert club.status(m) is Status.grace  # the first charge did not come
    club.at(local(2026, 2, 5, 11, 0))
    assert club.lapse() == 1
    # A later sign-up gets no second trial: a free one pays for nothing.
    club.at(local(2026, 3, 1, 11, 0))
    with pytest.raises(Problem) as caught:
        club.pay(m, "t-1", amount=0)
    assert caught.value.code == "nothing_paid"
    assert club.pay(m, "t-2", amount=14_900).kind == "started"
    assert club.view(m).status is Status.active


def test_payment_during_trial_follows_the_trial(club: Club) -> None:
    """A charge at sign-up (amount > 0) pays the first period after the trial."""
    m = club.enrol()
    club.pay(m, "p-1", amount=14_900)
    view = club.view(m)
    assert view.status is Status.trial
    assert (view.trial_until, view.paid_until) == (
        local(2026, 1, 29, 11, 0),
        local(2026, 2, 28, 11, 0),
    )


def test_cancellation_runs_to_the_end_of_what_was_paid(club: Club) -> None:
    m = club.enrol()
    club.pay(m, "c-1", plan="yearly", amount=149_000)
    club.at(local(2026, 6, 1, 12, 0))
    cancelled = club.send(m, "membership_cancelled", reason="moving")
    assert cancelled.kind == "cancelled"
    assert club.send(m, "membership_cancelled") is None
    assert club.send(m, "payment_failed") is None  # no renewal left to fail
    view = club.view(m)
    assert view.status is Status.cancelled and not view.renews and view.renews_at is None
    assert view.ends_at == local(2027, 1, 15, 11, 0) and club.plan(m) == "yearly"

    # Paying again before the end takes the cancellation back.
    club.at(local(2026, 7, 1, 12, 0))
    assert club.pay(m, "c-2", plan="yearly", periods=1).kind == "renewed"
    view = club.view(m)
    assert view.status is Status.active and view.paid_until == local(2028, 1, 15, 11, 0)

    # Cancelled again, it ends exactly at the end of what was paid (no grace).
    club.send(m, "membership_cancelled")
    club.at(local(2028, 1, 15, 10, 59))
    assert club.lapse() == 0 and club.status(m) is Status.cancelled
    club.at(local(2028, 1, 15, 11, 0))
    assert club.status(m) is Status.lapsed
    assert club.lapse() == 1
    assert [kind for kind, _ in club.history(m)] == [
        "started",
        "cancelled",
        "renewed",
        "cancelled",
        "lapsed",
    ]


def test_cancelled_in_grace_lapses_at_once(club: Club) -> None:
    m = club.enrol()
    club.pay(m, "g-1", periods=1)
    club.at(local(2026, 3, 1, 12, 0))  # paid until 28 Feb (after the trial), grace to 7 Mar
    assert club.status(m) is Status.grace
    assert club.send(m, "membership_cancelled").kind == "cancelled"
    assert club.status(m) is Status.lapsed and club.plan(m) is None
    assert club.view(m).lapsed_at == local(2026, 3, 1, 12, 0)
    assert club.lapse() == 0
    assert [t for t, _ in club.events()][-2:] == ["membership.cancelled", "membership.lapsed"]


def test_plan_change_and_explicit_paid_until(club: Club) -> None:
    m = club.enrol()
    # A date is paid through the end of that day in the program's time zone.
    club.pay(m, "x-1", plan="yearly", paid_until="2026-03-31")
    assert club.view(m).paid_until == local(2026, 4, 1, 0, 0)
    # An instant with an offset is taken as it is; a payment never takes time away.
    club.pay(m, "x-2", plan="yearly", paid_until="2026-02-01T00:00:00+00:00")
    assert club.view(m).paid_until == local(2026, 4, 1, 0, 0)
    club.pay(m, "x-3", plan="plus", paid_until="2026-06-30T22:00:00Z")
    view = club.view(m)
    assert view.plan == "plus" and view.paid_until == local(2026, 7, 1, 0, 0)
    assert view.trial_until is None  # a running membership that changes plan has no trial
    assert view.ends_at == local(2026, 7, 8, 0, 0)  # the new plan's grace


@pytest.mark.parametrize(
    ("attributes", "code"),
    [
        ({"reference": "r"}, "membership_attributes_invalid"),
        ({"plan": "plus"}, "membership_attributes_invalid"),
        ({"plan": "gold", "reference": "r"}, "unknown_plan"),
        ({"plan": "plus", "reference": "r", "periods": -1}, "membership_attributes_invalid"),
        ({"plan": "plus", "reference": "r", "amount": "149"}, "membership_attributes_invalid"),
        (
            {"plan": "plus", "reference": "r", "periods": 1, "paid_until": "2026-03-01"},
            "membership_attributes_invalid",
        ),
        (
            {"plan": "plus", "reference": "r", "paid_until": "1 March"},
            "membership_attributes_invalid",
        ),
        (
            {"plan": "plus", "reference": "r", "paid_until": "2026-03-01T00:00:00"},
            "membership_attributes_invalid",
        ),
        ({"plan": "yearly", "reference": "r", "paid_until": "2026-01-01"}, "nothing_paid"),
        ({"plan": "plus", "reference": "4111111111111111"}, "card_data_refused"),
        ({"plan": "plus", "reference": "r", "card": "4111 1111 1111 1111"}, "card_data_refused"),
        ({"plan": "plus", "reference": "r", "pan": 4111111111111111}, "card_data_refused"),
        (
            {"plan": "plus", "reference": "r", "payer": {"cards": ["5555-5555-5555-4444"]}},
            "card_data_refused",
        ),
    ],
)
def test_bad_payments_change_nothing(club: Club, attributes: dict[str, Any], code: str) -> None:
    """A refused payment rolls back its activity as well: nothing of it is stored."""
    m = club.enrol()
    with pytest.raises(Problem) as caught:
        club.send(m, "membership_payment", **attributes)
    assert caught.value.status == 422 and caught.value.code == code
    with club.db.read() as conn:
        found = activity_reads.find(conn, club.program.program_id, club.last_external_id)
    assert found is None
    assert club.status(m) is Status.none and club.events() == []


def test_card_data_refused_on_every_membership_event(club: Club) -> None:
    m = club.enrol()
    club.pay(m, "ok-1", amount=0, order="12345678901")  # 11 digits: not a card number
    for event_type in ("payment_failed", "membership_cancelled"):
        with pytest.raises(Problem) as caught:
            club.send(m, event_type, card="378282246310005")
        assert caught.value.code == "card_data_refused"
    assert club.status(m) is Status.trial


def test_reference_of_another_member_is_a_conflict(club: Club) -> None:
    a, b = club.enrol(), club.enrol()
    club.pay(a, "shared-1", amount=14_900)
    with pytest.raises(Problem) as caught:
        club.pay(b, "shared-1", amount=14_900)
    assert (caught.value.status, caught.value.code) == (409, "payment_reference_reused")
    assert club.status(b) is Status.none


def test_other_events_and_programs_without_plans(
    club: Club, db: Database, clock: FixedClock, make_program: Callable[..., ProgramVersion]
) -> None:
    m = club.enrol()
    assert club.send(m, "store_visit", plan="plus", reference="r") is None
    assert club.status(m) is Status.none
    # A program without plans takes the provider's events as plain events: no membership,
    # but card numbers are refused there too.
    plain = Club(db, clock, make_program())
    other = plain.enrol()
    assert plain.pay(other, "r-1") is None
    with pytest.raises(Problem) as caught:
        plain.pay(other, "r-2", card="4111 1111 1111 1111")
    assert (caught.value.status, caught.value.code) == (422, "card_data_refused")
    with db.read() as conn:
        assert (
            memberships.plans_of(
                conn, plain.program.spec, plain.program.program_id, [other], clock.now()
            )
            == {}
        )


def test_plans_of_many_members(club: Club) -> None:
    a, b, c = club.enrol(), club.enrol(), club.enrol()
    club.pay(a, "many-1", amount=0)
    club.pay(b, "many-2", plan="yearly", periods=2)
    club.send(b, "membership_cancelled")
    now = club.clock.now()
    with club.db.read() as conn:
        plans = memberships.plans_of(
            conn, club.program.spec, club.program.program_id, [a, b, c], now
        )
        assert plans == {a: "plus", b: "yearly"}
        later = now + timedelta(days=800)
        assert (
            memberships.plans_of(conn, club.program.spec, club.program.program_id, [a, b, c], later)
            == {}
        )


def test_lapse_job_in_chunks_and_in_run_due(club: Club, monkeypatch: pytest.MonkeyPatch) -> None:
    ids = [club.enrol() for _ in range(5)]
    for n, member_id in enumerate(ids):
        club.pay(member_id, f"chunk-{n}", plan="yearly")
    monkeypatch.setattr(memberships, "LAPSE_CHUNK", 2)
    club.at(local(2027, 1, 15, 11, 0))
    report = jobs.run_due(club.db, club.clock, [club.program.program_id])
    assert report.memberships_lapsed == 5
    assert jobs.run_due(club.db, club.clock, [club.program.program_id]).memberships_lapsed == 0
    assert all(club.status(m) is Status.lapsed for m in ids)
    assert all(club.row(m).lapsed_at == local(2027, 1, 15, 11, 0) for m in ids)
    assert [t for t, _ in club.events()].count("membership.lapsed") == 5


# -- the program document -----------------------------------------------------------------------


def _document(**fields: Any) -> dict[str, Any]:
    return {"key": "gym", "name": "Gym", "currency": "SEK", **fields}


def _errors(**fields: Any) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as caught:
        validate_data(_document(**fields))
    return caught.value.errors


def test_document_checks() -> None:
    spec = validate_data(_document(membership_plans=PLANS, rewards=REWARDS))
    assert [p.id for p in spec.membership_plans] == ["plus", "yearly"]
    assert spec.membership_plans[0].period.months == 1
    assert _errors(membership_plans=[*PLANS, PLANS[1]], rewards=REWARDS) == [
        ("membership_plans.2.id", "'yearly' is used twice")
    ]
    assert _errors(membership_plans=PLANS) == [
        ("membership_plans.0.rewards.0", "no reward 'smoothie'")
    ]
    bad = {"id": "x", "name": "X", "price": 100, "period": "weekly"}
    assert _errors(membership_plans=[bad])[0][0] == "membership_plans.0.period"
    bad = {"id": "x", "name": "X", "price": -1, "period": "monthly"}
    assert _errors(membership_plans=[bad])[0][0] == "membership_plans.0.price"
    bad = {"id": "x", "name": "X", "price": 1, "period": "monthly", "card": "y"}
    assert _errors(membership_plans=[bad])[0][0] == "membership_plans.0.card"


def test_membership_events_are_built_in() -> None:
    rules = [
        {"id": "paid", "on": "membership_payment", "effect": {"kind": "fixed", "points": 10}},
        {"id": "sorry", "on": "payment_failed", "effect": {"kind": "fixed", "points": 1}},
        {"id": "bye", "on": "membership_cancelled", "effect": {"kind": "fixed", "points": 1}},
    ]
    assert len(validate_data(_document(rules=rules)).rules or []) == 3
