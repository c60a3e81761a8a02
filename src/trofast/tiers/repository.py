"""All SQL of the tiers module: member tiers, their history, and the qualification metrics.

The metrics are read-only aggregates over `activities` (spend, purchases, visits, flights)
and `lots` (points), one GROUP BY per query: for one member on every activity, and for a
chunk of member ids at once in the period-end review (never a query per member).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    case,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trofast.activities.models import activities
from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts, lots
from trofast.tiers.document import Metric, PointsSource, TierQualification
from trofast.tiers.models import member_tiers, tier_history

Metrics = dict[Metric, int]
ACTIVITY_METRICS = (Metric.spend, Metric.purchases, Metric.visits, Metric.flights)


def get(conn: Connection, program_id: int, member_id: int, *, lock: bool = False) -> AnyRow | None:
    stmt = select(member_tiers).where(
        member_tiers.c.program_id == program_id, member_tiers.c.member_id == member_id
    )
    return conn.execute(stmt.with_for_update() if lock else stmt).first()


def get_many(conn: Connection, program_id: int, member_ids: Sequence[int]) -> dict[int, str]:
    rows = conn.execute(
        select(member_tiers.c.member_id, member_tiers.c.tier).where(
            member_tiers.c.program_id == program_id, member_tiers.c.member_id.in_(member_ids)
        )
    ).all()
    return {int(r.member_id): str(r.tier) for r in rows}


def create(conn: Connection, values: dict[str, Any]) -> AnyRow:
    """Insert the member's row unless another transaction just did; the row, locked."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(
        dialect_insert(member_tiers)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["program_id", "member_id"])
    )
    row = get(conn, values["program_id"], values["member_id"], lock=True)
    assert row is not None
    return row


def update_row(conn: Connection, row_id: int, **values: Any) -> None:
    conn.execute(update(member_tiers).where(member_tiers.c.id == row_id).values(**values))


_UPDATE_MANY = (
    update(member_tiers)
    .where(member_tiers.c.id == bindparam("b_id"))
    .values(
        tier=bindparam("b_tier"),
        since=bindparam("b_since"),
        period_start=bindparam("b_period_start"),
        qualified_until=bindparam("b_qualified_until"),
        grace_until=bindparam("b_grace_until"),
        updated_at=bindparam("b_updated_at"),
    )
)


def update_many(conn: Connection, rows: list[dict[str, Any]]) -> None:
    """Rewrite tier, since, period and grace of many rows (keys `b_id`, `b_tier`, ...)."""
    if rows:
        conn.execute(_UPDATE_MANY, rows)


def add_history(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if rows:
        conn.execute(tier_history.insert(), rows)


def history(conn: Connection, program_id: int, member_id: int, limit: int) -> list[AnyRow]:
    return list(
        conn.execute(
            select(tier_history)
            .where(tier_history.c.program_id == program_id, tier_history.c.member_id == member_id)
            .order_by(tier_history.c.id.desc())
            .limit(limit)
        ).all()
    )


# -- metrics ----------------------------------------------------------------------------------


def _activity_sums(flight_event: str | None) -> list[ColumnElement[Any]]:
    a = activities.c
    is_event = a.type == "event"

    def count(condition: ColumnElement[bool]) -> ColumnElement[Any]:
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    spend = func.coalesce(
        func.sum(case((a.type == "purchase", a.amount), (a.type == "return", -a.amount), else_=0)),
        0,
    )
    flights = (
        literal(0) if flight_event is None else count(is_event & (a.event_type == flight_event))
    )
    return [
        spend.label("spend"),
        count(a.type == "purchase").label("purchases"),
        count(is_event & (a.event_type == "store_visit")).label("visits"),
        flights.label("flights"),
    ]


def _points_sum() -> ColumnElement[Any]:
    return func.coalesce(func.sum(lots.c.original - lots.c.reversed), 0).label("points")


def _points_from(stmt: Select[Any], source: PointsSource, start: Any, end: Any) -> Select[Any]:
    """Join the member's points lots earned in [start, end) (by activities) to `stmt`, which
    selects from a table with `program_id`/`member_id` (or from `accounts` directly)."""
    stmt = stmt.join(
        lots,
        and_(
            lots.c.account_id == accounts.c.id,
            lots.c.activity_id.is_not(None),
            lots.c.created_at >= start,
            lots.c.created_at < end,
        ),
    )
    if source is PointsSource.purchases:
        stmt = stmt.join(
            activities, and_(activities.c.id == lots.c.activity_id, activities.c.type == "purchase")
        )
    return stmt


_POINTS_ACCOUNT = and_(accounts.c.kind == "member", accounts.c.unit == "points")


def member_metrics(
    conn: Connection,
    program_id: int,
    member_id: int,
    start: datetime,
    end: datetime,
    qualification: TierQualification,
) -> Metrics:
    """One member's metrics over [start, end): at most two small indexed aggregates."""
    wanted = set(qualification.metrics)
    out: Metrics = dict.fromkeys(Metric, 0)
    if wanted & set(ACTIVITY_METRICS):
        row = conn.execute(
            select(*_activity_sums(qualification.flight_event)).where(
                activities.c.program_id == program_id,
                activities.c.member_id == member_id,
                activities.c.occurred_at >= start,
                activities.c.occurred_at < end,
            )
        ).one()
        for metric in ACTIVITY_METRICS:
            out[metric] = int(getattr(row, metric.value))
    if Metric.points in wanted:
        stmt = select(_points_sum()).select_from(accounts)
        stmt = _points_from(stmt, qualification.points, start, end).where(
            accounts.c.program_id == program_id, accounts.c.member_id == member_id, _POINTS_ACCOUNT
        )
        out[Metric.points] = int(conn.execute(stmt).scalar_one())
    return out


# -- the period-end review --------------------------------------------------------------------


def _due(program_id: int, now: datetime) -> ColumnElement[bool]:
    mt = member_tiers.c
    return and_(
        mt.program_id == program_id,
        mt.qualified_until <= now,
        or_(mt.grace_until.is_(None), mt.grace_until <= now),
    )


def any_due(conn: Connection, program_id: int, now: datetime) -> bool:
    stmt = select(member_tiers.c.id).where(_due(program_id, now)).limit(1)
    return conn.execute(stmt).first() is not None


def next_due_chunk(
    conn: Connection, program_id: int, now: datetime, after_member_id: int, limit: int
) -> list[AnyRow]:
    """Up to `limit` due rows with member ids above `after_member_id`, in member id order,
    locked (FOR UPDATE on PostgreSQL) so a concurrent upgrade waits for the chunk."""
    stmt = (
        select(member_tiers)
        .where(_due(program_id, now), member_tiers.c.member_id > after_member_id)
        .order_by(member_tiers.c.member_id)
        .limit(limit)
        .with_for_update()
    )
    return list(conn.execute(stmt).all())


def chunk_metrics(
    conn: Connection,
    program_id: int,
    now: datetime,
    low: int,
    high: int,
    qualification: TierQualification,
) -> dict[int, Metrics]:
    """Metrics of every due member with an id in [low, high], each over its own ended period
    [period_start, qualified_until): one GROUP BY over the activities (and one over the lots
    for the points metric), whatever the number of members."""
    mt = member_tiers.c
    in_chunk = and_(_due(program_id, now), mt.member_id >= low, mt.member_id <= high)
    wanted = set(qualification.metrics)
    out: dict[int, Metrics] = {}
    if wanted & set(ACTIVITY_METRICS):
        stmt = (
            select(mt.member_id, *_activity_sums(qualification.flight_event))
            .select_from(member_tiers)
            .join(
                activities,
                and_(
                    activities.c.program_id == mt.program_id,
                    activities.c.member_id == mt.member_id,
                    activities.c.occurred_at >= mt.period_start,
                    activities.c.occurred_at < mt.qualified_until,
                ),
            )
            .where(in_chunk)
            .group_by(mt.member_id)
        )
        for row in conn.execute(stmt):
            values = out.setdefault(int(row.member_id), dict.fromkeys(Metric, 0))
            for metric in ACTIVITY_METRICS:
                values[metric] = int(getattr(row, metric.value))
    if Metric.points in wanted:
        stmt = (
            select(mt.member_id, _points_sum())
            .select_from(member_tiers)
            .join(
                accounts,
                and_(
                    accounts.c.program_id == mt.program_id,
                    accounts.c.member_id == mt.member_id,
                    _POINTS_ACCOUNT,
                ),
            )
        )
        stmt = (
            _points_from(stmt, qualification.points, mt.period_start, mt.qualified_until)
            .where(in_chunk)
            .group_by(mt.member_id)
        )
        for row in conn.execute(stmt):
            out.setdefault(int(row.member_id), dict.fromkeys(Metric, 0))[Metric.points] = int(
                row.points
            )
    return out
