"""HTTP: the program's reports: key figures per month, cohorts and RFM segments (any key of
the program may read them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from trofast.analytics import cohorts, kpis, rfm
from trofast.http import Services, require, services
from trofast.kit.auth import Principal, Scope
from trofast.programs import service as programs

router = APIRouter(tags=["reports"])


@router.get("/v1/reports/kpis", response_model=kpis.KpisOut)
def key_figures(
    first: str | None = Query(
        None, alias="from", description="First month, YYYY-MM (default: 11 months before `to`)"
    ),
    last: str | None = Query(
        None, alias="to", description="Last month, YYYY-MM (default: this month)"
    ),
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
) -> kpis.KpisOut:
    """Per calendar month (program time zone): members, enrolments, active members %,
    repeat customers %, purchases and average purchase of members and of non-members,
    returns and points earned. docs/measurement.md defines each figure."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return kpis.kpis(conn, program, svc.clock.now(), first, last)


@router.get("/v1/reports/cohorts", response_model=cohorts.CohortsOut)
def enrolment_cohorts(
    first: str | None = Query(
        None, alias="from", description="First enrolment month, YYYY-MM (default: 11 before `to`)"
    ),
    last: str | None = Query(
        None, alias="to", description="Last enrolment month, YYYY-MM (default: this month)"
    ),
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
) -> cohorts.CohortsOut:
    """Members by enrolment month, followed month by month to this one: the share who
    bought in each month since, and their net revenue per member to date (historical
    lifetime value). docs/measurement.md defines each figure."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return cohorts.cohorts(conn, program, svc.clock.now(), first, last)


@router.get("/v1/reports/rfm", response_model=rfm.RfmOut)
def rfm_segments(
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
) -> rfm.RfmOut:
    """Members who have bought, scored 1-5 on recency, frequency and monetary value (the
    last 365 days) by quintiles, and grouped in segments: their sizes and averages."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return rfm.rfm(conn, program, svc.clock.now())


@router.get("/v1/reports/rfm/{segment}", response_model=rfm.ScoredPage)
def rfm_segment_members(
    segment: str,
    cursor: str | None = Query(None, description="next_cursor of the previous page"),
    limit: int = Query(100, ge=1, le=1000),
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
) -> rfm.ScoredPage:
    """The members of one segment with their scores, by member id, a page at a time (e.g.
    `at_risk`, to win them back)."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return rfm.members_of(conn, program, svc.clock.now(), segment, cursor, limit)
