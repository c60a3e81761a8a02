"""Cohorts: the members enrolled in a month, followed month by month since.

For each enrolment month (program time zone): how many members it brought, the share of
them who bought in each month since (retention), and their net revenue per member added
up to each month since (the cohort's historical customer lifetime value).
"""

from __future__ import annotations

import bisect
from datetime import datetime

from pydantic import BaseModel, Field
from sqlalchemy import Connection

from trofast.analytics import repository
from trofast.analytics.kpis import months, percent
from trofast.programs.service import ProgramVersion


class Cohort(BaseModel):
    """One enrolment month's members; index k of each list is the k-th month since (0: the
    enrolment month), up to the month of the report's `as_of`."""

    cohort: str = Field(description="Enrolment month, YYYY-MM")
    members: int
    buying_pct: list[float | None] = Field(
        description="Share of the cohort with a purchase in the k-th month since, in %"
    )
    value_per_member: list[int] = Field(
        description="Net revenue (purchases less returns) of the cohort per member, from "
        "enrolment to the end of the k-th month since, in minor units, rounded down"
    )


class CohortsOut(BaseModel):
    program: str
    currency: str
    timezone: str
    as_of: str = Field(description="The last month followed, YYYY-MM")
    cohorts: list[Cohort]


def cohorts(
    conn: Connection,
    program: ProgramVersion,
    now: datetime,
    first: str | None = None,
    last: str | None = None,
) -> CohortsOut:
    """The cohorts enrolled from `first` to `last` ("YYYY-MM", by default the twelve months
    that end with the one of `now`), each followed up to the month of `now`."""
    zone = program.spec.zone
    cohort_starts, _ = months(zone, now, first, last)
    label = [start.astimezone(zone).strftime("%Y-%m") for start in cohort_starts]
    # The cohorts' months and those since, to the month of `now` (the same first month).
    starts, ends = months(
        zone, now, label[0], max(label[-1], now.astimezone(zone).strftime("%Y-%m"))
    )
    count = len(cohort_starts)
    cohort_of: dict[int, int] = {}
    sizes = [0] * count
    for member_id, enrolled_at, _channel in repository.enrolments(conn, program.program_id):
        index = bisect.bisect_right(starts, enrolled_at) - 1
        if 0 <= index < count and enrolled_at < ends[index]:
            cohort_of[member_id] = index
            sizes[index] += 1
    span = len(starts)
    buyers: list[list[set[int]]] = [[set() for _ in range(span)] for _ in range(count)]
    value: list[list[int]] = [[0] * span for _ in range(count)]
    for kind, member_id, occurred_at, amount, _points in repository.activity_figures(
        conn, program.program_id, starts[0], ends[-1]
    ):
        cohort = cohort_of.get(member_id) if member_id is not None else None
        if cohort is None or kind == "event":
            continue
        # (a receipt dated before its member enrolled counts in the enrolment month)
        since = max(bisect.bisect_right(starts, occurred_at) - 1 - cohort, 0)
        if kind == "purchase":
            buyers[cohort][since].add(member_id)
            value[cohort][since] += amount or 0
        else:  # a return
            value[cohort][since] -= amount or 0
    out = []
    for index in range(count):
        size = sizes[index]
        followed_months = span - index
        running, per_member = 0, []
        for since in range(followed_months):
            running += value[index][since]
            per_member.append(running // size if size else 0)
        out.append(
            Cohort(
                cohort=label[index],
                members=size,
                buying_pct=[percent(len(buyers[index][k]), size) for k in range(followed_months)],
                value_per_member=per_member,
            )
        )
    return CohortsOut(
        program=program.spec.key,
        currency=program.spec.currency,
        timezone=program.spec.timezone,
        as_of=starts[-1].astimezone(zone).strftime("%Y-%m"),
        cohorts=out,
    )
