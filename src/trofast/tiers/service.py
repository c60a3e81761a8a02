"""Tiers: qualification, upgrades at once, the period-end review, manual floors, progress.

- `on_activity` runs after a member's purchase, return or event (in that transaction): it
  counts the member's metrics in the current qualification window and moves the member up
  at once when a higher tier's thresholds are reached (history row, `tier.changed` event,
  the tier's welcome points once per tier and member). It never moves anyone down.
- `review` is the period-end job: members whose qualification period ended (and whose
  grace days are over) are kept, or moved down one tier or to what the period's metrics
  reach; never below a manual floor that still holds. Chunks of member ids, one GROUP BY
  per chunk; running it twice changes nothing, as a reviewed member's period moves on.
- Periods are whole days of the program's time zone: a calendar year, the member's
  enrolment anniversary year, or the last N months (rolling). A tier reached during a
  period is secured until the end of the next one, which is the period reviewed then.

A member without a `member_tiers` row is in the entry tier (the first). Services take the
caller's connection and never commit (DESIGN rule 7).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection

from trofast.kit.errors import conflict, invalid
from trofast.kit.orm import AnyRow, insert_returning_ids
from trofast.ledger import repository as ledger_reads
from trofast.ledger import service as ledger
from trofast.members import repository as member_reads
from trofast.notify.outbox import raise_event, raise_events
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion
from trofast.programs.spec import ProgramSpec
from trofast.rewards.document import localized
from trofast.rules import engine
from trofast.tiers import repository
from trofast.tiers.document import Combine, Downgrade, Metric, TierQualification, Window
from trofast.tiers.models import tier_history
from trofast.tiers.repository import Metrics
from trofast.tiers.schemas import (
    FloorOut,
    NeedOut,
    NextTierOut,
    TierChangeOut,
    TierHistoryOut,
    TierOut,
)

TOPIC = "tier.changed"
#: Members reviewed per transaction by the period-end job.
REVIEW_CHUNK = 5000


@dataclass(frozen=True)
class Change:
    member_id: int
    from_tier: str | None
    to_tier: str
    reason: str


@dataclass
class Review:
    """What one run of the period-end review did."""

    reviewed: int = 0
    kept: int = 0
    downgraded: int = 0
    graced: int = 0
    changes: list[Change] = field(default_factory=list, repr=False)


# -- periods ----------------------------------------------------------------------------------


def _midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


def _add_months(day: date, months: int) -> date:
    index = day.month - 1 + months
    year, month = day.year + index // 12, index % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def _months(q: TierQualification) -> int:
    if q.window is Window.calendar_quarter:
        return 3
    return q.rolling_months or 12


def window(
    q: TierQualification, zone: ZoneInfo, now: datetime, enrolled_at: datetime | None
) -> tuple[datetime, datetime]:
    """The qualification window counted at `now`: [start, end) in UTC, local midnights."""
    today = now.astimezone(zone).date()
    if q.window is Window.calendar_year:
        start, end = date(today.year, 1, 1), date(today.year + 1, 1, 1)
    elif q.window is Window.calendar_quarter:
        start = date(today.year, 3 * ((today.month - 1) // 3) + 1, 1)
        end = _add_months(start, 3)
    elif q.window is Window.anniversary_year:
        assert enrolled_at is not None
        anchor = enrolled_at.astimezone(zone).date()
        years = today.year - anchor.year
        start = _add_months(anchor, 12 * years)
        if start > today:
            start = _add_months(anchor, 12 * (years - 1))
        end = _add_months(anchor, 12 * (start.year - anchor.year + 1))
    else:
        end = today + timedelta(days=1)
        start = _add_months(end, -_months(q))
    return _midnight(start, zone), _midnight(end, zone)


def following(q: TierQualification, end: datetime, zone: ZoneInfo) -> datetime:
    """The end of the period that starts at `end`."""
    return _midnight(_add_months(end.astimezone(zone).date(), _months(q)), zone)


def _last_day(end: datetime, zone: ZoneInfo) -> date:
    """The last day (program zone) of a period ending at the local midnight `end`."""
    return end.astimezone(zone).date() - timedelta(days=1)


# -- ranks and thresholds ---------------------------------------------------------------------


def rank(spec: ProgramSpec, tier_id: str | None) -> int:
    """The tier's position (0: entry); -1 for a tier this version no longer has."""
    for index, tier in enumerate(spec.tiers):
        if tier.id == tier_id:
            return index
    return -1


def reached(spec: ProgramSpec, metrics: Metrics) -> int:
    """The highest tier whose thresholds `metrics` reach (0 when none)."""
    q = spec.tier_qualification
    test = all if q.combine is Combine.all else any
    for index in range(len(spec.tiers) - 1, 0, -1):
        threshold = spec.tiers[index].threshold
        if test(metrics.get(m, 0) >= threshold[m] for m in q.metrics):
            return index
    return 0


def _enrolled_at(conn: Connection, program: ProgramVersion, member_id: int) -> datetime | None:
    if program.spec.tier_qualification.window is not Window.anniversary_year:
        return None
    row = member_reads.get(conn, program.program_id, member_id)
    return None if row is None else row.enrolled_at


# -- reading ----------------------------------------------------------------------------------


def tier_of(conn: Connection, program_id: int, member_id: int) -> str | None:
    """The member's tier id (None when the program has no tiers): what rules see as
    `tier.name` and rewards check in `eligible.tiers`."""
    spec = programs.current(conn, program_id).spec
    return tiers_of(conn, spec, program_id, [member_id]).get(member_id)


def tiers_of(
    conn: Connection, spec: ProgramSpec, program_id: int, member_ids: list[int]
) -> dict[int, str]:
    """Many members' tier ids in one query (for a batch of activities); empty without tiers."""
    if not spec.tiers:
        return {}
    entry = spec.tiers[0].id
    stored = repository.get_many(conn, program_id, member_ids) if member_ids else {}
    return {m: stored[m] if rank(spec, stored.get(m)) > 0 else entry for m in member_ids}


def view(
    conn: Connection, program: ProgramVersion, member: AnyRow, now: datetime, locale: str | None
) -> TierOut:
    """The member's tier, until when it is secured, and what the next tier still needs."""
    spec = _with_tiers(program)
    q, zone = spec.tier_qualification, spec.zone
    member_id = int(member.id)
    row = repository.get(conn, program.program_id, member_id)
    current = max(rank(spec, None if row is None else row.tier), 0)
    tier = spec.tiers[current]
    start, end = window(q, zone, now, member.enrolled_at)
    metrics = repository.member_metrics(conn, program.program_id, member_id, start, end, q)
    fallback = spec.locales[0]
    language = locale or member.locale
    next_tier = None
    if current + 1 < len(spec.tiers):
        up = spec.tiers[current + 1]
        by = None if q.rolling_months else _last_day(end, zone)
        next_tier = NextTierOut(
            tier=up.id,
            name=localized(up.name, language, fallback),
            combine=q.combine,
            needed=[
                NeedOut(metric=m, needed=max(up.threshold[m] - metrics[m], 0), by=by)
                for m in q.metrics
            ],
        )
    floor = None
    if row is not None and row.manual_until is not None and row.manual_until > now:
        floor = FloorOut(tier=row.manual_tier, until=_last_day(row.manual_until, zone))
    secured = None
    if current > 0 and row is not None and row.qualified_until is not None:
        secured = _last_day(row.qualified_until, zone)
        if floor is not None and floor.until > secured:
            secured = floor.until
    grace = row.grace_until if row is not None else None
    return TierOut(
        member_id=member_id,
        tier=tier.id,
        name=localized(tier.name, language, fallback),
        since=member.enrolled_at if row is None else row.since,
        secured_until=secured,
        grace_until=None if grace is None else _last_day(grace, zone),
        floor=floor,
        earn_multiplier_percent=tier.earn_multiplier_percent,
        perks=list(tier.perks),
        window_from=start.astimezone(zone).date(),
        window_until=_last_day(end, zone),
        metrics={m: metrics[m] for m in q.metrics},
        next=next_tier,
    )


def history(
    conn: Connection, program: ProgramVersion, member_id: int, limit: int
) -> TierHistoryOut:
    rows = repository.history(conn, program.program_id, member_id, limit)
    return TierHistoryOut(
        items=[
            TierChangeOut(
                from_tier=r.from_tier, to_tier=r.to_tier, reason=r.reason, actor=r.actor, at=r.at
            )
            for r in rows
        ]
    )


def _with_tiers(program: ProgramVersion) -> ProgramSpec:
    if not program.spec.tiers:
        raise conflict("tiers_not_enabled", "This program has no tiers.")
    return program.spec


# -- moving up --------------------------------------------------------------------------------


def on_activity(
    conn: Connection, program: ProgramVersion, member_id: int, now: datetime, actor: str = "system"
) -> Change | None:
    """Move the member up at once if the current window's metrics reach a higher tier;
    extend the secured period if they reach the member's own tier again. Never moves down.

    Call it in the transaction that recorded the member's activity, after the activity row
    and its points are written. It costs one indexed row read plus one aggregate over the
    member's activities in the window (and one over its lots with the points metric), and
    nothing when the program has fewer than two tiers or the member's top tier is already
    secured as far as the current window can secure it.
    """
    spec = program.spec
    if len(spec.tiers) < 2:
        return None
    q, zone, pid = spec.tier_qualification, spec.zone, program.program_id
    row = repository.get(conn, pid, member_id, lock=True)
    current = 0 if row is None else max(rank(spec, row.tier), 0)
    start, end = window(q, zone, now, _enrolled_at(conn, program, member_id))
    secured_until = following(q, end, zone)
    if (
        row is not None
        and current == len(spec.tiers) - 1
        and row.tier == spec.tiers[current].id
        and row.grace_until is None
        and row.qualified_until is not None
        and row.qualified_until >= secured_until
    ):
        return None
    metrics = repository.member_metrics(conn, pid, member_id, start, end, q)
    level = reached(spec, metrics)
    if level > current:
        return _move(
            conn, program, row, member_id, level, "upgrade", now, actor, (end, secured_until)
        )
    if (
        level == current > 0
        and row is not None
        and (row.qualified_until is None or row.qualified_until < secured_until)
    ):
        repository.update_row(
            conn,
            int(row.id),
            period_start=end,
            qualified_until=secured_until,
            grace_until=None,
            updated_at=now,
        )
    return None


def _move(
    conn: Connection,
    program: ProgramVersion,
    row: AnyRow | None,
    member_id: int,
    to: int,
    reason: str,
    now: datetime,
    actor: str,
    period: tuple[datetime, datetime] | None,
    **extra: Any,
) -> Change:
    """Put the member in tier `to` now: row, history, event and (upward) welcome points."""
    spec, pid = program.spec, program.program_id
    tier = spec.tiers[to]
    values: dict[str, Any] = {
        "tier": tier.id,
        "since": now,
        "period_start": None if to == 0 or period is None else period[0],
        "qualified_until": None if to == 0 or period is None else period[1],
        "grace_until": None,
        "updated_at": now,
        **extra,
    }
    before = spec.tiers[0].id if row is None else str(row.tier)
    if row is None:
        row = repository.create(conn, {"program_id": pid, "member_id": member_id, **values})
    repository.update_row(conn, int(row.id), **values)
    change = Change(member_id, before, tier.id, reason)
    _record(conn, program, [change], now, actor)
    if rank(spec, before) < to and tier.welcome_points > 0:
        _welcome(conn, program, member_id, to, now, actor)
    return change


def _record(
    conn: Connection, program: ProgramVersion, changes: list[Change], now: datetime, actor: str
) -> None:
    """History rows and one `tier.changed` event per change (keyed by the history id)."""
    if not changes:
        return
    pid = program.program_id
    ids = insert_returning_ids(
        conn,
        tier_history,
        [
            {
                "program_id": pid,
                "member_id": c.member_id,
                "from_tier": c.from_tier,
                "to_tier": c.to_tier,
                "reason": c.reason,
                "actor": actor,
                "at": now,
            }
            for c in changes
        ],
    )
    at = now.isoformat()
    events = [
        (
            f"tier:{history_id}",
            {
                "member_id": c.member_id,
                "from": c.from_tier,
                "to": c.to_tier,
                "reason": c.reason,
                "at": at,
            },
        )
        for history_id, c in zip(ids, changes, strict=True)
    ]
    if len(events) == 1:
        raise_event(conn, pid, TOPIC, events[0][0], events[0][1], now)
    else:
        raise_events(conn, pid, TOPIC, events, now)


def _welcome(
    conn: Connection, program: ProgramVersion, member_id: int, to: int, now: datetime, actor: str
) -> None:
    """The tier's welcome points, once per tier and member (the ledger key says so)."""
    tier = program.spec.tiers[to]
    key = f"tier-welcome:{member_id}:{tier.id}"
    if ledger_reads.transaction_by_key(conn, program.program_id, key) is not None:
        return
    account = ledger_reads.member_account(conn, member_id, ledger.POINTS)
    if account is None:
        return
    _, expires_at = engine.lot_dates(program.spec, now, vesting_days=0)
    ledger.post(
        conn,
        ledger.Context(program.program_id, now, actor, program.version),
        ledger.Earn(
            member_id=member_id,
            account_id=account,
            credits=[ledger.Credit(tier.welcome_points, f"tier:{tier.id}", None, expires_at)],
            idempotency_key=key,
            effective_at=now,
        ),
    )


# -- manual tiers -----------------------------------------------------------------------------


def set_manual(
    conn: Connection,
    program: ProgramVersion,
    member: AnyRow,
    tier_id: str,
    until: date,
    now: datetime,
    actor: str,
) -> TierOut:
    """Put the member in `tier_id` now, and keep it at least there until the end of `until`
    (program zone): a floor the period-end review never goes below while it holds."""
    spec = _with_tiers(program)
    to = rank(spec, tier_id)
    if to < 0:
        raise invalid("unknown_tier", f"No tier {tier_id!r} in this program.")
    zone = spec.zone
    until_at = _midnight(until + timedelta(days=1), zone)
    if until_at <= now:
        raise invalid("until_in_past", f"{until.isoformat()} has already passed.")
    member_id = int(member.id)
    row = repository.get(conn, program.program_id, member_id, lock=True)
    floor = {"manual_tier": tier_id, "manual_until": until_at}
    if row is not None and row.tier == tier_id:
        repository.update_row(conn, int(row.id), updated_at=now, **floor)
    else:
        # Reviewed when the current window ends, on that window's metrics (the floor holds
        # until `until` whatever they are).
        period = window(spec.tier_qualification, zone, now, member.enrolled_at)
        _move(conn, program, row, member_id, to, "manual", now, actor, period, **floor)
    return view(conn, program, member, now, None)


# -- the period-end review --------------------------------------------------------------------


def any_due(conn: Connection, program: ProgramVersion, now: datetime) -> bool:
    return len(program.spec.tiers) > 1 and repository.any_due(conn, program.program_id, now)


def review(
    conn: Connection,
    program: ProgramVersion,
    now: datetime,
    after_member_id: int = 0,
    limit: int = REVIEW_CHUNK,
    actor: str = "job",
) -> tuple[Review, int | None]:
    """Review the next `limit` members (ids above `after_member_id`) whose period ended;
    (what was done, the last member id, or None when no due member is left)."""
    spec = program.spec
    done = Review()
    if len(spec.tiers) < 2:
        return done, None
    pid = program.program_id
    rows = repository.next_due_chunk(conn, pid, now, after_member_id, limit)
    if not rows:
        return done, None
    low, high = int(rows[0].member_id), int(rows[-1].member_id)
    metrics = repository.chunk_metrics(conn, pid, now, low, high, spec.tier_qualification)
    updates: list[dict[str, Any]] = []
    zero: Metrics = dict.fromkeys(Metric, 0)
    for row in rows:
        update, change = _decide(spec, row, metrics.get(int(row.member_id), zero), now)
        updates.append(update)
        done.reviewed += 1
        if change is None:
            done.kept += 1
        else:
            done.changes.append(change)
            if change.reason == "grace":
                done.graced += 1
            else:
                done.downgraded += 1
    repository.update_many(conn, updates)
    _record(conn, program, done.changes, now, actor)
    return done, (high if len(rows) == limit else None)


def _decide(
    spec: ProgramSpec, row: AnyRow, metrics: Metrics, now: datetime
) -> tuple[dict[str, Any], Change | None]:
    """One member's review: the row's new values and the change, if any. Pure."""
    q, zone = spec.tier_qualification, spec.zone
    current = rank(spec, row.tier)
    level = reached(spec, metrics)
    floor = 0
    if row.manual_until is not None and row.manual_until > now:
        floor = max(rank(spec, row.manual_tier), 0)
    if current < 0:
        target = max(level, floor)
    elif level >= current:
        target = current
    else:
        target = max(current - 1 if q.downgrade is Downgrade.one_step else level, floor)
    start, end = row.period_start, row.qualified_until
    while end <= now:  # the next period not yet over (several if the job ran late)
        start, end = end, following(q, end, zone)
    values = {
        "b_id": row.id,
        "b_tier": row.tier,
        "b_since": row.since,
        "b_period_start": start,
        "b_qualified_until": end,
        "b_grace_until": None,
        "b_updated_at": now,
    }
    if target == current:
        return values, None
    if q.grace_days and row.grace_until is None:
        grace_until = row.qualified_until + timedelta(days=q.grace_days)
        if grace_until > now:
            values.update(
                b_period_start=row.period_start,
                b_qualified_until=row.qualified_until,
                b_grace_until=grace_until,
            )
            return values, Change(int(row.member_id), row.tier, row.tier, "grace")
    tier = spec.tiers[target].id
    values.update(b_tier=tier, b_since=now)
    if target == 0:
        values.update(b_period_start=None, b_qualified_until=None)
    return values, Change(int(row.member_id), row.tier, tier, "downgrade")
