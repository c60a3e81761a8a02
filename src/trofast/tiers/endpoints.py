"""HTTP: a member's tier and progress, its history, and an admin's manual tier (a floor)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from trofast.http import Services, require, services
from trofast.kit.auth import Principal, Scope
from trofast.members import service as members
from trofast.programs import service as programs
from trofast.tiers import service
from trofast.tiers.schemas import TierHistoryOut, TierOut, TierSetIn

router = APIRouter(tags=["tiers"])


@router.get("/v1/members/{ref}/tier", response_model=TierOut)
def get_tier(
    ref: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    locale: str | None = Query(None, max_length=10),
) -> TierOut:
    """The member's tier, until when it is secured, and what the next tier still needs."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        return service.view(conn, program, member, svc.clock.now(), locale)


@router.put("/v1/members/{ref}/tier", response_model=TierOut)
def put_tier(
    ref: str,
    data: TierSetIn,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> TierOut:
    """Set the member's tier now; it is also a floor until the end of `until`."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        return service.set_manual(
            conn, program, member, data.tier, data.until, now, principal.actor
        )


@router.get("/v1/members/{ref}/tier/history", response_model=TierHistoryOut)
def get_tier_history(
    ref: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    limit: int = Query(50, ge=1, le=500),
) -> TierHistoryOut:
    """The member's tier changes, newest first."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        return service.history(conn, program, int(member.id), limit)
