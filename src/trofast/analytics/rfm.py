"""RFM segments: members scored by how recently, how often and for how much they buy.

Every member who has bought is scored 1-5 on each of recency (days since the last
purchase), frequency (purchases in the last 365 days) and monetary value (their sum), by
the quintiles of the program's own members: 5 is the best fifth. A value equal to a
quintile's cut point scores in the band above it, so equal values always score alike.
The recency and frequency scores place a member in one segment (`SEGMENTS`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from datetime import datetime, timedelta

from pydantic import BaseModel, Field
from sqlalchemy import Connection

from trofast.analytics import repository
from trofast.analytics.kpis import percent
from trofast.kit import pagination
from trofast.kit.errors import invalid
from trofast.programs.service import ProgramVersion

WINDOW = timedelta(days=365)

#: The segments, each with the rule that places a member in it (the first that holds).
SEGMENTS = {
    "champions": "recency 4-5 and frequency 4-5: bought lately and often",
    "loyal": "recency 3-5 and frequency 3-5 (not champions): buy often",
    "promising": "recency 3-5 and frequency 1-2: bought lately, not yet often",
    "at_risk": "recency 1-2 and frequency 3-5: bought often, but not lately",
    "hibernating": "recency 1-2 and frequency 1-2: bought seldom and long ago",
}


class Scored(BaseModel):
    """One member's RFM figures."""

    member_id: int
    loyalty_number: str | None
    recency_days: int = Field(description="Days since the last purchase")
    frequency: int = Field(description="Purchases in the last 365 days")
    monetary: int = Field(description="Their sum, in minor units")
    r: int
    f: int
    m: int
    segment: str


class Segment(BaseModel):
    segment: str
    rule: str
    members: int
    pct: float | None = Field(description="Share of the members who have bought, in %")
    avg_recency_days: float | None
    avg_frequency: float | None
    avg_monetary: int | None = Field(description="Minor units, rounded down")


class RfmOut(BaseModel):
    program: str
    currency: str
    as_of: datetime
    window_days: int
    cut_points: dict[str, list[int]] = Field(
        description="The quintiles' cut points of recency_days, frequency and monetary"
    )
    segments: list[Segment]
    never_bought: int = Field(description="Members without a purchase (not scored)")


class ScoredPage(BaseModel):
    items: list[Scored]
    next_cursor: str | None


def rfm(conn: Connection, program: ProgramVersion, now: datetime) -> RfmOut:
    """The segments' sizes and averages, and the quintiles' cut points, as of `now`."""
    scored, cut_points = _scored(conn, program, now)
    segments = []
    for name, rule in SEGMENTS.items():
        members = [s for s in scored if s.segment == name]
        n = len(members)
        segments.append(
            Segment(
                segment=name,
                rule=rule,
                members=n,
                pct=percent(n, len(scored)),
                avg_recency_days=round(sum(s.recency_days for s in members) / n, 1) if n else None,
                avg_frequency=round(sum(s.frequency for s in members) / n, 1) if n else None,
                avg_monetary=sum(s.monetary for s in members) // n if n else None,
            )
        )
    return RfmOut(
        program=program.spec.key,
        currency=program.spec.currency,
        as_of=now,
        window_days=WINDOW.days,
        cut_points=cut_points,
        segments=segments,
        never_bought=repository.member_count(conn, program.program_id) - len(scored),
    )


def members_in(
    conn: Connection, program: ProgramVersion, now: datetime, segment: str
) -> list[Scored]:
    """The members of `segment`, scored, by member id (422 `unknown_segment`)."""
    if segment not in SEGMENTS:
        raise invalid(
            "unknown_segment", f"{segment!r} is not a segment: one of {', '.join(SEGMENTS)}."
        )
    return [s for s in _scored(conn, program, now)[0] if s.segment == segment]


def members_of(
    conn: Connection,
    program: ProgramVersion,
    now: datetime,
    segment: str,
    cursor: str | None,
    limit: int,
) -> ScoredPage:
    """A page of the members of `segment`, by member id (422 `unknown_segment`)."""
    chosen = members_in(conn, program, now, segment)
    after = pagination.decode(cursor)
    chosen = [s for s in chosen if s.member_id > after]
    page = chosen[:limit]
    more = len(chosen) > limit
    return ScoredPage(
        items=page, next_cursor=pagination.encode(page[-1].member_id) if more else None
    )


def _scored(
    conn: Connection, program: ProgramVersion, now: datetime
) -> tuple[list[Scored], dict[str, list[int]]]:
    """The scored members, and the cut points they were scored by (recency in days, from
    the most to the fewest)."""
    rows = repository.purchase_summaries(conn, program.program_id, now - WINDOW, now)
    recency = [(now - row.last).days for row in rows]
    frequency = [int(row.frequency) for row in rows]
    monetary = [int(row.monetary or 0) for row in rows]
    # recency scores by the negated days: fewer days is better
    r_cuts, f_cuts, m_cuts = _cuts([-d for d in recency]), _cuts(frequency), _cuts(monetary)
    out = []
    for row, days, often, spent in zip(rows, recency, frequency, monetary, strict=True):
        r = 1 + bisect.bisect_right(r_cuts, -days)
        f = 1 + bisect.bisect_right(f_cuts, often)
        out.append(
            Scored(
                member_id=int(row.member_id),
                loyalty_number=row.loyalty_number,
                recency_days=days,
                frequency=often,
                monetary=spent,
                r=r,
                f=f,
                m=1 + bisect.bisect_right(m_cuts, spent),
                segment=_segment(r, f),
            )
        )
    cut_points = {"recency_days": [-cut for cut in r_cuts], "frequency": f_cuts, "monetary": m_cuts}
    return out, cut_points


def _cuts(values: Sequence[int]) -> list[int]:
    """The four cut points between the quintiles of `values` (none without values)."""
    ordered = sorted(values)
    n = len(ordered)
    return [ordered[n * i // 5] for i in range(1, 5)] if n else []


def _segment(r: int, f: int) -> str:
    if r >= 4 and f >= 4:
        return "champions"
    if r >= 3:
        return "loyal" if f >= 3 else "promising"
    return "at_risk" if f >= 3 else "hibernating"
