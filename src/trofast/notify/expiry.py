"""Expiry warnings: who has points expiring soon (an endpoint) and the `points.expiring`
events the worker raises for the windows a program configures (`expiry_warning_days`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from trofast.kit import pagination
from trofast.notify import repository
from trofast.notify.schemas import ExpiringMember, ExpiringPage
from trofast.programs.service import ProgramVersion

TOPIC = "points.expiring"


def expiring_page(
    conn: Connection,
    program_id: int,
    now: datetime,
    within_days: int,
    cursor: str | None,
    limit: int,
) -> ExpiringPage:
    """Members whose vested points expire within `within_days` days, by member id."""
    after = pagination.decode(cursor)
    until = now + timedelta(days=within_days)
    rows = repository.expiring_members(conn, program_id, now, until, after, limit + 1)
    items = [
        ExpiringMember(
            member_id=r.member_id,
            loyalty_number=r.loyalty_number,
            points_expiring=int(r.points),
            earliest_expires_at=r.earliest,
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return ExpiringPage(
        within_days=within_days,
        items=items,
        next_cursor=pagination.encode(items[-1].member_id) if more else None,
    )


@dataclass(frozen=True)
class Warning:
    """One `points.expiring` event: a member's points expiring on one day (program zone),
    announced for the tightest configured window that day falls in."""

    key: str
    payload: dict[str, Any]


def warnings_due(conn: Connection, program: ProgramVersion, now: datetime) -> list[Warning]:
    """Every warning the program's windows call for now (raised or not yet).

    For each member and local expiry day within the widest window, the tightest window
    that contains the day's earliest expiry: points 30 days out get the 30-day warning,
    the same points a week out (with windows [30, 7]) the 7-day one, and points earned
    only 5 days before they expire just the 7-day one. The key
    `expiring:{member}:{day}:{window}` makes each warning happen once.
    """
    windows = sorted(set(program.spec.expiry_warning_days))
    if not windows:
        return []
    zone = program.spec.zone
    rows = repository.expiring_by_time(
        conn, program.program_id, now, now + timedelta(days=windows[-1])
    )
    days: dict[tuple[int, date], dict[str, Any]] = {}
    for r in rows:
        expires_at: datetime = r.expires_at
        day = expires_at.astimezone(zone).date()
        entry = days.setdefault(
            (int(r.member_id), day),
            {"loyalty_number": r.loyalty_number, "earliest": expires_at, "points": 0},
        )
        entry["points"] += int(r.points)
        entry["earliest"] = min(entry["earliest"], expires_at)
    warnings = []
    for (member_id, day), entry in days.items():
        window = next(d for d in windows if entry["earliest"] <= now + timedelta(days=d))
        warnings.append(
            Warning(
                key=f"expiring:{member_id}:{day.isoformat()}:{window}",
                payload={
                    "member_id": member_id,
                    "loyalty_number": entry["loyalty_number"],
                    "points": entry["points"],
                    "expires_on": day.isoformat(),
                    "expires_at": entry["earliest"].isoformat(),
                    "window_days": window,
                },
            )
        )
    return warnings


def unraised(conn: Connection, program_id: int, warnings: list[Warning]) -> list[Warning]:
    """The warnings whose key the outbox does not hold yet."""
    done = repository.existing_keys(conn, program_id, [w.key for w in warnings])
    return [w for w in warnings if w.key not in done]
