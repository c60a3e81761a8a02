"""HTTP: a member's paid membership and its history (payments arrive as activities)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from trofast.http import Services, require, services
from trofast.kit.auth import Principal, Scope
from trofast.members import service as members
from trofast.memberships import service
from trofast.memberships.schemas import MembershipHistoryOut, MembershipOut
from trofast.programs import service as programs

router = APIRouter(tags=["memberships"])


@router.get("/v1/members/{ref}/membership", response_model=MembershipOut)
def get_membership(
    ref: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    locale: str | None = Query(None, max_length=10),
) -> MembershipOut:
    """The member's paid membership: plan, status, paid until, renewal and benefits."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        return service.view(conn, program, member, svc.clock.now(), locale)


@router.get("/v1/members/{ref}/membership/history", response_model=MembershipHistoryOut)
def get_membership_history(
    ref: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    limit: int = Query(50, ge=1, le=500),
) -> MembershipHistoryOut:
    """What happened to the member's membership (payments, failures, cancellation, lapse),
    newest first."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        return service.history(conn, program, int(member.id), limit)
