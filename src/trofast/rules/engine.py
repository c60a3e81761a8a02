"""Evaluate a program version against an activity. Pure: no database, no I/O (rule 6).

This is the foundation's engine: the program's base earn rate on purchases. The full
rule language (multipliers, caps, events, stamps, cashback) builds on these types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from trofast.ledger.allocation import expiry_after_months, expiry_end_of_year, vesting_time
from trofast.programs.spec import EarnRate, ExpiryAfterMonths, ExpiryEndOfYear, ProgramSpec

BASE_RULE = "base"


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    amount: int
    category: str | None = None


@dataclass(frozen=True)
class ActivityFacts:
    """What the rules may read about an activity."""

    type: str
    occurred_at: datetime
    amount: int = 0
    currency: str | None = None
    store: str | None = None
    channel: str | None = None
    lines: tuple[Line, ...] = ()
    event_type: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class MemberSnapshot:
    """What the rules may read about the member."""

    id: int
    status: str
    birth_date: date | None = None


@dataclass(frozen=True)
class PointsEffect:
    """Credit `points` to the member, as one lot, attributed to `rule`."""

    points: int
    rule: str
    vests_at: datetime | None
    expires_at: datetime | None


def points_for_amount(amount: int, rate: EarnRate) -> int:
    """The one place that turns money (minor units) into points: rounded down, never negative."""
    if amount <= 0:
        return 0
    return (amount // rate.per_amount) * rate.points


def lot_dates(spec: ProgramSpec, earned_at: datetime) -> tuple[datetime | None, datetime | None]:
    """(vests_at, expires_at) for points earned at `earned_at` under the program's policy."""
    expiry = spec.expiry
    expires_at: datetime | None = None
    if isinstance(expiry, ExpiryAfterMonths):
        expires_at = expiry_after_months(earned_at, expiry.months)
    elif isinstance(expiry, ExpiryEndOfYear):
        expires_at = expiry_end_of_year(earned_at, expiry.years_after, spec.zone)
    return vesting_time(earned_at, spec.vesting_days), expires_at


def evaluate(
    spec: ProgramSpec, activity: ActivityFacts, member: MemberSnapshot
) -> list[PointsEffect]:
    """The effects of `activity` for `member`; an empty list when nothing is earned."""
    if member.status != "active" or activity.type != "purchase":
        return []
    points = points_for_amount(activity.amount, spec.earn)
    if points == 0:
        return []
    vests_at, expires_at = lot_dates(spec, activity.occurred_at)
    return [PointsEffect(points, BASE_RULE, vests_at, expires_at)]


def purchase_points(spec: ProgramSpec, amount: int) -> int:
    """Points a purchase of `amount` earns; a return keeps exactly this for what remains."""
    return points_for_amount(amount, spec.earn)
