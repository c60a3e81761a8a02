"""Pure lot arithmetic: which lots pay for a debit, and when lots vest and expire."""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

from trofast.kit.errors import InvariantBroken


@dataclass(frozen=True)
class LotBalance:
    """What a lot can still give: `remaining` points, expiring at `expires_at` (None: never)."""

    id: int
    remaining: int
    expires_at: datetime | None


def spending_order(lot: LotBalance) -> tuple[bool, datetime | None, int]:
    """Soonest-expiring first, never-expiring last, then oldest (lowest id) first."""
    return (lot.expires_at is None, lot.expires_at, lot.id)


def allocate(lots: Iterable[LotBalance], amount: int) -> list[tuple[int, int]]:
    """Take `amount` from `lots` in the order given; returns (lot id, points taken) pairs.

    Takes as much as the lots hold when they hold less; the caller compares the sum.
    """
    if amount < 0:
        raise InvariantBroken(f"cannot allocate a negative amount {amount}")
    taken: list[tuple[int, int]] = []
    left = amount
    for lot in lots:
        if left == 0:
            break
        take = min(lot.remaining, left)
        if take > 0:
            taken.append((lot.id, take))
            left -= take
    return taken


def sort_for_spending(lots: Sequence[LotBalance]) -> list[LotBalance]:
    return sorted(lots, key=spending_order)


def vesting_time(earned_at: datetime, vesting_days: int) -> datetime | None:
    """When points earned at `earned_at` become spendable; None means at once."""
    return earned_at + timedelta(days=vesting_days) if vesting_days > 0 else None


def expiry_after_months(earned_at: datetime, months: int) -> datetime:
    """The same day-of-month `months` later (clamped to the month's last day)."""
    month_index = earned_at.month - 1 + months
    year = earned_at.year + month_index // 12
    month = month_index % 12 + 1
    day = min(earned_at.day, calendar.monthrange(year, month)[1])
    return earned_at.replace(year=year, month=month, day=day)


def expiry_end_of_year(earned_at: datetime, years_after: int, zone: ZoneInfo) -> datetime:
    """The first instant of the next year in the program's zone, `years_after` years later."""
    local_year = earned_at.astimezone(zone).year + years_after
    return datetime.combine(datetime(local_year + 1, 1, 1).date(), time(0), tzinfo=zone)
