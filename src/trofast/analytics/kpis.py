"""The program's key figures per calendar month: the table of seed 004 (repeat customers,
average purchase, active members), what it rests on (members, enrolments, purchases of
members and of non-members, points earned), and the ledger's side (points issued,
redeemed and expired, liability, redemption rate and breakage).

Months are calendar months in the program's time zone. The figures are read from the
stored activities, members and ledger as they are now: a member erased since still counts
in the months it was a member (its rows stay, without personal data). docs/measurement.md
defines each figure.
"""

from __future__ import annotations

import bisect
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field
from sqlalchemy import Connection

from trofast.analytics import repository
from trofast.analytics.tiers import month_boundaries
from trofast.kit.clock import month_bounds
from trofast.kit.errors import invalid
from trofast.programs.service import ProgramVersion

#: The longest report (ten years of months).
MAX_MONTHS = 120


class MonthKpis(BaseModel):
    """One month's figures. Money in minor units of the program's currency."""

    month: str = Field(description="YYYY-MM, in the program's time zone")
    members: int = Field(description="Members enrolled by the end of the month")
    enrolments: int = Field(description="Members enrolled in the month")
    enrolments_by_channel: dict[str, int] = Field(
        description="The month's enrolments by the channel they came through (store, online, ...)"
    )
    active_members: int = Field(
        description="Members (enrolled by the end of the month) with a purchase or an event in it"
    )
    active_members_pct: float | None = Field(description="active_members / members, in %")
    buying_members: int = Field(description="Members with a purchase in the month")
    repeat_customers: int = Field(
        description="Buying members who had made a purchase before the month"
    )
    repeat_customers_pct: float | None = Field(description="repeat_customers / buying_members, %")
    purchases: int = Field(description="Purchases, by members and without a member")
    member_purchases: int
    revenue: int = Field(description="Sum of the purchases' amounts (returns not deducted)")
    member_revenue: int
    returned: int = Field(description="Sum of the amounts of the month's returns")
    average_purchase: int | None = Field(description="revenue / purchases, rounded")
    average_member_purchase: int | None
    average_non_member_purchase: int | None
    points_earned: int = Field(
        description="Points of the month's activities as answered (returns take theirs back)"
    )
    points_issued: int = Field(
        description="Points posted to members (vested) in the month, net of those taken back"
    )
    points_redeemed: int = Field(description="Points spent in the month, net of refunds")
    points_expired: int = Field(description="Points that expired in the month")
    points_adjusted: int = Field(description="Net manual adjustments in the month")
    liability_points: int = Field(description="Points held by members at the month's end")
    liability_value: int = Field(description="liability_points at the program's point_value")
    redemption_rate_pct: float | None = Field(
        description="Points redeemed / points issued since the program began, to the month's end"
    )
    breakage_pct: float | None = Field(
        description="Points expired / points issued since the program began, to the month's end"
    )


class KpisOut(BaseModel):
    program: str
    currency: str
    timezone: str
    months: list[MonthKpis]


def kpis(
    conn: Connection,
    program: ProgramVersion,
    now: datetime,
    first: str | None = None,
    last: str | None = None,
) -> KpisOut:
    """The figures of each month from `first` to `last` ("YYYY-MM", both included; by
    default the twelve months that end with the one of `now`)."""
    zone = program.spec.zone
    starts, ends = months(zone, now, first, last)
    start, end = starts[0], ends[-1]
    program_id = program.program_id
    tallies = [_Month() for _ in starts]
    for kind, member_id, occurred_at, amount, points in repository.activity_figures(
        conn, program_id, start, end
    ):
        tallies[bisect.bisect_right(starts, occurred_at) - 1].add(
            kind, member_id, amount or 0, points
        )
    books = _Books(starts)
    for created_at, amount, debited, credited in repository.member_point_flows(
        conn, program_id, end
    ):
        books.add(created_at, amount, debited, credited)
    enrolled_at: dict[int, datetime] = {}
    channels: list[dict[str, int]] = [{} for _ in starts]
    for member_id, at, channel in repository.enrolments(conn, program_id):
        enrolled_at[member_id] = at
        if start <= at < end:
            counted = channels[bisect.bisect_right(starts, at) - 1]
            counted[channel] = counted.get(channel, 0) + 1
    enrolled = sorted(enrolled_at.values())
    first_purchases = repository.first_purchases(conn, program_id, end)
    return KpisOut(
        program=program.spec.key,
        currency=program.spec.currency,
        timezone=program.spec.timezone,
        months=[
            month.figures(
                month_start.astimezone(zone).strftime("%Y-%m"),
                # a purchase sent afterwards may be dated before its member enrolled
                active=sum(1 for member in month.active if enrolled_at[member] < month_end),
                members=bisect.bisect_left(enrolled, month_end),
                by_channel=dict(sorted(channels[i].items())),
                repeat=sum(1 for member in month.buyers if first_purchases[member] < month_start),
                **books.figures(i, program.spec.point_value),
            )
            for i, (month, month_start, month_end) in enumerate(
                zip(tallies, starts, ends, strict=True)
            )
        ],
    )


def months(
    zone: ZoneInfo, now: datetime, first: str | None, last: str | None
) -> tuple[list[datetime], list[datetime]]:
    """The starts and the ends (UTC instants) of the months from `first` to `last`, both
    "YYYY-MM" in `zone` and included: by default the twelve months that end with the one
    of `now`. 422 `invalid_month` or `invalid_period` for a period that is not one."""
    if last is None:
        last = now.astimezone(zone).strftime("%Y-%m")
    last_start, end = month_bounds(zone, last)
    if first is None:
        local = last_start.astimezone(zone)
        index = local.year * 12 + local.month - 12  # eleven months before `last`
        first = f"{index // 12:04d}-{index % 12 + 1:02d}"
    start, _ = month_bounds(zone, first)
    if last_start < start:
        raise invalid(
            "invalid_period", f"The report would end ({last}) before it begins ({first})."
        )
    ends = [boundary.astimezone(UTC) for boundary in month_boundaries(zone, start, end)]
    if len(ends) > MAX_MONTHS:
        raise invalid("invalid_period", f"A report covers at most {MAX_MONTHS} months.")
    return [start, *ends[:-1]], ends


class _Month:
    """What one month's activities add up to."""

    def __init__(self) -> None:
        self.active: set[int] = set()
        self.buyers: set[int] = set()
        self.purchases = self.member_purchases = 0
        self.revenue = self.member_revenue = self.returned = self.points = 0

    def add(self, kind: str, member_id: int | None, amount: int, points: int) -> None:
        self.points += points
        if kind == "return":
            self.returned += amount
            return
        if member_id is not None:
            self.active.add(member_id)
        if kind != "purchase":
            return
        self.purchases += 1
        self.revenue += amount
        if member_id is not None:
            self.buyers.add(member_id)
            self.member_purchases += 1
            self.member_revenue += amount

    def figures(
        self,
        label: str,
        *,
        active: int,
        members: int,
        by_channel: dict[str, int],
        repeat: int,
        **ledger: Any,
    ) -> MonthKpis:
        non_members = self.purchases - self.member_purchases
        return MonthKpis(
            month=label,
            members=members,
            enrolments=sum(by_channel.values()),
            enrolments_by_channel=by_channel,
            active_members=active,
            active_members_pct=percent(active, members),
            buying_members=len(self.buyers),
            repeat_customers=repeat,
            repeat_customers_pct=percent(repeat, len(self.buyers)),
            purchases=self.purchases,
            member_purchases=self.member_purchases,
            revenue=self.revenue,
            member_revenue=self.member_revenue,
            returned=self.returned,
            average_purchase=_average(self.revenue, self.purchases),
            average_member_purchase=_average(self.member_revenue, self.member_purchases),
            average_non_member_purchase=_average(self.revenue - self.member_revenue, non_members),
            points_earned=self.points,
            **ledger,
        )


#: What a posted transfer between a member and a system account is, by the system account.
_FLOW = {
    "issuance": "issued",
    "partner_issuance": "issued",
    "redemption": "redeemed",
    "partner_redemption": "redeemed",
    "breakage": "expired",
}


class _Books:
    """The members' points per month from the ledger: what came in and went out, and what
    they held at each month's end (everything before the first month is its opening)."""

    def __init__(self, starts: list[datetime]) -> None:
        self.starts = starts
        self.opening = {"issued": 0, "redeemed": 0, "expired": 0, "adjusted": 0}
        self.months = [dict.fromkeys(self.opening, 0) for _ in starts]

    def add(self, at: datetime, amount: int, debited: str, credited: str) -> None:
        """One transfer: into a member's account when `credited` is the member's."""
        into_member = credited == "member"
        flow = _FLOW.get(debited if into_member else credited, "adjusted")
        # issued and adjusted count what members gain; redeemed and expired what they lose
        gained = amount if into_member else -amount
        index = bisect.bisect_right(self.starts, at) - 1
        totals = self.opening if index < 0 else self.months[index]
        totals[flow] += gained if flow in ("issued", "adjusted") else -gained

    def figures(self, index: int, point_value: int) -> dict[str, Any]:
        """The ledger's figures of month `index` (and the lifetime ones to its end)."""
        month = self.months[index]
        lifetime = dict(self.opening)
        for earlier in self.months[: index + 1]:
            for flow, points in earlier.items():
                lifetime[flow] += points
        held = lifetime["issued"] + lifetime["adjusted"] - lifetime["redeemed"]
        held -= lifetime["expired"]
        return {
            "points_issued": month["issued"],
            "points_redeemed": month["redeemed"],
            "points_expired": month["expired"],
            "points_adjusted": month["adjusted"],
            "liability_points": held,
            "liability_value": held * point_value // 100,
            "redemption_rate_pct": percent(lifetime["redeemed"], lifetime["issued"]),
            "breakage_pct": percent(lifetime["expired"], lifetime["issued"]),
        }


def percent(part: int, whole: int) -> float | None:
    """part / whole in %, to one decimal; None when there is no whole."""
    return round(100 * part / whole, 1) if whole else None


def _average(total: int, count: int) -> int | None:
    """total / count rounded half up (money in minor units); None for no count."""
    return (2 * total + count) // (2 * count) if count else None
