"""HTTP: the program's key figures per month (any key of the program may read them)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from trofast.analytics import kpis
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
