"""HTTP: the program's reports: key figures per month and cohorts (any key of the program
may read them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from trofast.analytics import cohorts, kpis
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
