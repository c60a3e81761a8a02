"""Paid memberships: the state of each member's membership, driven by the payment
provider's events, and the job that lapses memberships nobody paid for.

The provider sends three event types as activities (built-in event types):

- `membership_payment` (`plan`, `reference`, optional `amount`, and `periods` or
  `paid_until`): starts a membership (with the plan's free trial first, once per member
  and program), or renews a running one: it runs to the end of what is paid.
- `payment_failed`: the membership is in grace; it still runs until the end of what was
  paid plus the plan's `grace_days`, and lapses then unless a payment comes. A paid period
  that ends without any payment is a missed payment as well (grace without the event).
- `membership_cancelled`: it runs to the end of what was paid (no grace), then lapses.

`on_event` applies one of them in the transaction that recorded the activity; `lapse_due`
is the job that records lapses (history, `membership.lapsed`); `active_plan` answers the
plan whose benefits a member has now. The platform never holds card data: attributes that
look like card numbers are refused (`card_data_refused`). Services take the caller's
connection and never commit (DESIGN rule 7); times come from the caller (rule 8).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from trofast.kit.errors import Problem, conflict, invalid
from trofast.kit.orm import AnyRow
from trofast.memberships import repository
from trofast.memberships.document import MembershipPlan, plan_of
from trofast.memberships.schemas import (
    MembershipChangeOut,
    MembershipHistoryOut,
    MembershipOut,
    Status,
)
from trofast.notify.outbox import raise_event
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec
from trofast.rewards.document import localized

PAYMENT = "membership_payment"
CANCELLED = "membership_cancelled"
FAILED = "payment_failed"
#: The event types `on_event` acts on (all built in: programs accept them undeclared).
EVENT_TYPES = frozenset({PAYMENT, CANCELLED, FAILED})
#: Outbox topic per history kind.
TOPICS = {
    "started": "membership.started",
    "renewed": "membership.renewed",
    "payment_failed": "membership.payment_failed",
    "cancelled": "membership.cancelled",
    "lapsed": "membership.lapsed",
}
#: Memberships lapsed per transaction by the job.
LAPSE_CHUNK = 1000
MAX_PERIODS = 120

#: 13-19 digits, possibly grouped by spaces or dashes as printed on a card.
_CARD_NUMBER = re.compile(r"^\d(?:[ -]?\d){12,18}$")


@dataclass(frozen=True)
class Change:
    """What one event or the job did to a member's membership."""

    member_id: int
    kind: str
    plan: str
    paid_until: datetime | None
    at: datetime


# -- card data --------------------------------------------------------------------------------


def refuse_card_data(attributes: Mapping[str, Any]) -> None:
    """Raise 422 `card_data_refused` if any attribute value (nested ones too) looks like a
    card number: a string of 13-19 digits (spaces or dashes between them allowed) or an
    integer of 13-19 digits. Trofast never stores card data."""

    def walk(value: Any, path: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, f"{path}.{key}")
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                walk(item, f"{path}.{index}")
        elif isinstance(value, str):
            if _CARD_NUMBER.match(value.strip()):
                _refuse(path)
        elif (
            isinstance(value, int)
            and not isinstance(value, bool)
            and 13 <= len(str(abs(value))) <= 19
        ):
            _refuse(path)

    walk(dict(attributes), "attributes")


def _refuse(path: str) -> None:
    raise invalid(
        "card_data_refused",
        f"{path} looks like a card number; Trofast never takes card data. Send the payment "
        "provider's reference instead.",
        path=path,
    )


# -- attributes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payment:
    plan: str
    reference: str
    amount: int | None
    periods: int | None
    paid_until: datetime | None


def _bad(path: str, message: str) -> Problem:
    return invalid(
        "membership_attributes_invalid",
        f"attributes.{path}: {message}",
        errors=[{"path": f"attributes.{path}", "message": message}],
    )


def _text(attributes: Mapping[str, Any], name: str, required: bool) -> str | None:
    value = attributes.get(name)
    if value is None:
        if required:
            raise _bad(name, "is required")
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= 200:
        raise _bad(name, "must be a string of 1-200 characters")
    return value


def _count(attributes: Mapping[str, Any], name: str, low: int, high: int) -> int | None:
    value = attributes.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(name, f"must be a whole number from {low} to {high}")
    return value


def _instant(attributes: Mapping[str, Any], name: str, zone: ZoneInfo) -> datetime | None:
    """A date (covered through the end of that day, program zone) or an ISO 8601 instant
    with an offset."""
    value = attributes.get(name)
    if value is None:
        return None
    message = "must be a date (YYYY-MM-DD) or a date-time with an offset"
    if not isinstance(value, str):
        raise _bad(name, message)
    try:
        if len(value) == 10:
            return _midnight(date.fromisoformat(value) + timedelta(days=1), zone)
        at = datetime.fromisoformat(value)
    except ValueError:
        raise _bad(name, message) from None
    if at.tzinfo is None:
        raise _bad(name, message)
    return at.astimezone(UTC)


def parse_payment(attributes: Mapping[str, Any], zone: ZoneInfo) -> Payment:
    """The attributes of a `membership_payment`; 422 `membership_attributes_invalid`."""
    plan = _text(attributes, "plan", True)
    reference = _text(attributes, "reference", True)
    assert plan is not None and reference is not None
    periods = _count(attributes, "periods", 0, MAX_PERIODS)
    paid_until = _instant(attributes, "paid_until", zone)
    if periods is not None and paid_until is not None:
        raise _bad("periods", "give periods or paid_until, not both")
    amount = _count(attributes, "amount", 0, 10**13)
    return Payment(plan, reference, amount, periods, paid_until)


# -- time -------------------------------------------------------------------------------------


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _later(at: datetime, zone: ZoneInfo, *, months: int = 0, days: int = 0) -> datetime:
    """`at` plus calendar months and days, counted on the program zone's wall clock (the
    day of the month is kept, or the month's last day when it has fewer)."""
    local = at.astimezone(zone)
    if months:
        index = local.month - 1 + months
        year, month = local.year + index // 12, index % 12 + 1
        day = min(local.day, calendar.monthrange(year, month)[1])
        local = local.replace(year=year, month=month, day=day)
    return (local + timedelta(days=days)).astimezone(UTC)


# -- reading ----------------------------------------------------------------------------------


def status_at(row: AnyRow | None, now: datetime) -> Status:
    """The status of the membership `row` at `now`."""
    if row is None:
        return Status.none
    if row.ends_at is None or row.ends_at <= now:
        return Status.lapsed
    if row.cancelled_at is not None:
        return Status.cancelled
    if row.payment_failed_at is not None or now >= row.paid_until:
        return Status.grace
    if row.trial_until is not None and now < row.trial_until:
        return Status.trial
    return Status.active


def active_plan(
    conn: Connection, program_id: int, member_id: int, now: datetime
) -> MembershipPlan | None:
    """The plan whose benefits the member has at `now` (a membership that runs: trial,
    active, grace or cancelled before its end), or None. None as well when the current
    program version no longer has the plan. For perks, rules and reward eligibility."""
    row = repository.get(conn, program_id, member_id)
    if row is None or row.ends_at is None or row.ends_at <= now:
        return None
    return plan_of(programs.current(conn, program_id).spec.membership_plans, row.plan)


def plans_of(
    conn: Connection, spec: ProgramSpec, program_id: int, member_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """Many members' running plan ids in one query (members without one are left out);
    empty when the program has no plans."""
    if not spec.membership_plans or not member_ids:
        return {}
    return repository.running_plans(conn, program_id, member_ids, now)


def view(
    conn: Connection, program: ProgramVersion, member: AnyRow, now: datetime, locale: str | None
) -> MembershipOut:
    """The member's membership at `now`: plan, status, what is paid, renewal, benefits."""
    spec = _with_plans(program)
    member_id = int(member.id)
    row = repository.get(conn, program.program_id, member_id)
    status = status_at(row, now)
    language = locale or member.locale
    plan = None if row is None else plan_of(spec.membership_plans, row.plan)
    runs = status not in (Status.none, Status.lapsed)
    renews = status in (Status.trial, Status.active, Status.grace)
    benefits = plan if runs else None
    return MembershipOut(
        member_id=member_id,
        status=status,
        plan=None if row is None else row.plan,
        name=None if plan is None else localized(plan.name, language, spec.locales[0]),
        price=None if plan is None else plan.price,
        currency=spec.currency,
        period=None if plan is None else plan.period,
        started_at=None if row is None else row.started_at,
        trial_until=None if row is None else row.trial_until,
        paid_until=None if row is None else row.paid_until,
        renews=renews,
        renews_at=row.paid_until if renews and row is not None else None,
        grace_until=row.ends_at if status is Status.grace and row is not None else None,
        ends_at=row.ends_at if runs and row is not None else None,
        lapsed_at=_lapsed_at(row) if status is Status.lapsed else None,
        perks=[] if benefits is None else list(benefits.perks),
        earn_multiplier_percent=100 if benefits is None else benefits.earn_multiplier_percent,
        rewards=[] if benefits is None else list(benefits.rewards),
    )


def _lapsed_at(row: AnyRow | None) -> datetime | None:
    if row is None:
        return None
    ended: datetime | None = row.lapsed_at if row.lapsed_at is not None else row.ends_at
    return ended


def history(
    conn: Connection, program: ProgramVersion, member_id: int, limit: int
) -> MembershipHistoryOut:
    rows = repository.history(conn, program.program_id, member_id, limit)
    return MembershipHistoryOut(
        items=[
            MembershipChangeOut(
                kind=r.kind,
                plan=r.plan,
                reference=r.reference,
                amount=r.amount,
                paid_until=r.paid_until,
                at=r.at,
                actor=r.actor,
            )
            for r in rows
        ]
    )


def _with_plans(program: ProgramVersion) -> ProgramSpec:
    if not program.spec.membership_plans:
        raise conflict("memberships_not_enabled", "This program has no membership plans.")
    return program.spec


# -- events from the payment provider ---------------------------------------------------------


def on_event(
    conn: Connection,
    program: ProgramVersion,
    member_id: int,
    event_type: str,
    attributes: Mapping[str, Any],
    occurred_at: datetime,
    now: datetime,
    actor: str = "system",
) -> Change | None:
    """Apply a `membership_payment`, `payment_failed` or `membership_cancelled` event of
    the member (any other event type: nothing, None) in the caller's transaction, after
    the activity is recorded. The change it made, or None when it changed nothing (a
    payment reference seen before, a second cancellation, an event for a membership that
    no longer runs). Bad attributes raise a 422 problem, so the activity is rolled back."""
    if event_type not in EVENT_TYPES:
        return None
    refuse_card_data(attributes)
    spec = _with_plans(program)
    pid = program.program_id
    if event_type == PAYMENT:
        payment = parse_payment(attributes, spec.zone)
        return _pay(conn, program, member_id, payment, occurred_at, now, actor)
    named = _text(attributes, "plan", False)
    row = repository.get(conn, pid, member_id, lock=True)
    if row is None or row.ends_at is None or row.ends_at <= occurred_at:
        return None  # nothing runs: a late or stray event
    if named is not None and named != row.plan:
        return None  # about a plan the member has left
    if row.cancelled_at is not None:
        return None  # cancelled: no renewal to fail, nothing more to cancel
    if event_type == FAILED:
        if row.payment_failed_at is not None:
            return None  # already in grace: a retry that failed again
        repository.update_row(conn, int(row.id), payment_failed_at=occurred_at, updated_at=now)
        return _record(conn, pid, member_id, "payment_failed", row.plan, occurred_at, now, actor)
    if row.paid_until > occurred_at:
        repository.update_row(
            conn, int(row.id), cancelled_at=occurred_at, ends_at=row.paid_until, updated_at=now
        )
        return _record(conn, pid, member_id, "cancelled", row.plan, occurred_at, now, actor)
    # Cancelled in grace: what was paid has already ended, so it ends now.
    repository.update_row(
        conn,
        int(row.id),
        cancelled_at=occurred_at,
        ends_at=None,
        lapsed_at=occurred_at,
        updated_at=now,
    )
    change = _record(conn, pid, member_id, "cancelled", row.plan, occurred_at, now, actor)
    _record(conn, pid, member_id, "lapsed", row.plan, occurred_at, now, actor)
    return change


def _pay(
    conn: Connection,
    program: ProgramVersion,
    member_id: int,
    payment: Payment,
    occurred_at: datetime,
    now: datetime,
    actor: str,
) -> Change | None:
    spec, pid = program.spec, program.program_id
    plan = plan_of(spec.membership_plans, payment.plan)
    if plan is None:
        raise invalid("unknown_plan", f"No membership plan {payment.plan!r} in this program.")
    row = repository.get(conn, pid, member_id, lock=True)
    if _seen(conn, pid, member_id, payment.reference):
        return None
    if row is not None:
        kind = "renewed" if _runs(row, occurred_at) else "started"
        values = _paid(spec.zone, plan, row, payment, occurred_at, now)
        repository.update_row(conn, int(row.id), **values)
    else:
        kind = "started"
        values = _paid(spec.zone, plan, None, payment, occurred_at, now)
        row, inserted = repository.create(
            conn, {"program_id": pid, "member_id": member_id, **values}
        )
        if not inserted:  # another transaction started it meanwhile: pay onto theirs
            if _seen(conn, pid, member_id, payment.reference):
                return None
            kind = "renewed" if _runs(row, occurred_at) else "started"
            values = _paid(spec.zone, plan, row, payment, occurred_at, now)
            repository.update_row(conn, int(row.id), **values)
    return _record(
        conn,
        pid,
        member_id,
        kind,
        plan.id,
        occurred_at,
        now,
        actor,
        reference=payment.reference,
        amount=payment.amount,
        paid_until=values["paid_until"],
    )


def _seen(conn: Connection, program_id: int, member_id: int, reference: str) -> bool:
    """Whether this payment was applied before; 409 when another member's was."""
    owner = repository.reference_owner(conn, program_id, reference)
    if owner is not None and owner != member_id:
        raise conflict(
            "payment_reference_reused",
            f"Payment {reference!r} was already recorded for another member.",
        )
    return owner is not None


def _runs(row: AnyRow | None, at: datetime) -> bool:
    return row is not None and row.ends_at is not None and row.ends_at > at


def _paid(
    zone: ZoneInfo,
    plan: MembershipPlan,
    row: AnyRow | None,
    payment: Payment,
    occurred_at: datetime,
    now: datetime,
) -> dict[str, Any]:
    """The membership's new values after `payment`. Pure."""
    running = _runs(row, occurred_at)
    if running:
        assert row is not None
        started_at, trial_until = row.started_at, row.trial_until
        base = max(row.paid_until, occurred_at)
        trial_used = bool(row.trial_used)
    else:
        started_at = occurred_at
        trial_used = row is not None and bool(row.trial_used)
        trial = plan.trial_days > 0 and not trial_used
        trial_until = _later(occurred_at, zone, days=plan.trial_days) if trial else None
        base = trial_until or occurred_at
        trial_used = trial_used or trial
    if payment.paid_until is not None:
        paid_until = payment.paid_until
    else:
        periods = payment.periods
        if periods is None:
            periods = 0 if payment.amount == 0 else 1  # a free sign-up starts the trial only
        paid_until = _later(base, zone, months=periods * plan.period.months)
    if running:
        assert row is not None
        paid_until = max(paid_until, row.paid_until)  # a payment never takes time away
    if trial_until is not None:
        paid_until = max(paid_until, trial_until)
    if paid_until <= occurred_at:
        raise invalid(
            "nothing_paid",
            "The payment covers no time from when it happened: give periods or a later paid_until.",
        )
    return {
        "plan": plan.id,
        "started_at": started_at,
        "trial_until": trial_until,
        "paid_until": paid_until,
        "ends_at": _later(paid_until, zone, days=plan.grace_days),
        "cancelled_at": None,
        "payment_failed_at": None,
        "lapsed_at": None,
        "trial_used": trial_used,
        "updated_at": now,
    }


def _record(
    conn: Connection,
    program_id: int,
    member_id: int,
    kind: str,
    plan: str,
    at: datetime,
    now: datetime,
    actor: str,
    *,
    reference: str | None = None,
    amount: int | None = None,
    paid_until: datetime | None = None,
) -> Change:
    """A history row and its outbox event (keyed by the history id)."""
    history_id = repository.add_history(
        conn,
        {
            "program_id": program_id,
            "member_id": member_id,
            "kind": kind,
            "plan": plan,
            "reference": reference,
            "amount": amount,
            "paid_until": paid_until,
            "at": at,
            "actor": actor,
            "recorded_at": now,
        },
    )
    payload: dict[str, Any] = {
        "member_id": member_id,
        "plan": plan,
        "at": at.isoformat(),
        "paid_until": None if paid_until is None else paid_until.isoformat(),
    }
    if reference is not None:
        payload["reference"] = reference
    raise_event(conn, program_id, TOPICS[kind], f"membership:{history_id}", payload, now)
    return Change(member_id, kind, plan, paid_until, at)


# -- the lapse job ----------------------------------------------------------------------------


def any_due(conn: Connection, program_id: int, now: datetime) -> bool:
    return repository.any_due(conn, program_id, now)


def lapse_due(
    conn: Connection, program_id: int, now: datetime, limit: int = LAPSE_CHUNK, actor: str = "job"
) -> list[Change]:
    """Record the lapse of up to `limit` memberships that ended by `now` (the end of what
    was paid plus grace, or of what was paid once cancelled): history at the moment each
    ended, `membership.lapsed`. A lapsed membership leaves the due set, so running it
    again changes nothing; call it until it returns fewer than `limit`."""
    changes = []
    for row in repository.next_due(conn, program_id, now, limit):
        ended = row.ends_at
        repository.update_row(conn, int(row.id), ends_at=None, lapsed_at=ended, updated_at=now)
        changes.append(
            _record(
                conn,
                program_id,
                int(row.member_id),
                "lapsed",
                row.plan,
                ended,
                now,
                actor,
                paid_until=row.paid_until,
            )
        )
    return changes
