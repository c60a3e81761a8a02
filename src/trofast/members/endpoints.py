"""HTTP: /v1/members."""

from __future__ import annotations

import contextlib
from datetime import datetime

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from trofast.activities import service as activities
from trofast.http import Services, idempotent, require, services
from trofast.kit.auth import Principal, Scope
from trofast.kit.errors import Problem
from trofast.members import privacy, service
from trofast.members.schemas import (
    ErasureIn,
    ErasureOut,
    MemberIn,
    MemberOut,
    MemberPage,
    MemberPatch,
    UserIn,
    UserList,
    UserOut,
)
from trofast.programs import service as programs
from trofast.programs.service import ProgramVersion

router = APIRouter(prefix="/v1/members", tags=["members"])


@router.post("", status_code=201, response_model=MemberOut)
def enrol(
    data: MemberIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Enrol a member; the answer carries the new loyalty number."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("enrol", data.model_dump(mode="json")),
            201,
            lambda: _enrol(conn, program, data, now, principal.actor),
            now,
        )


def _enrol(
    conn: Connection, program: ProgramVersion, data: MemberIn, now: datetime, actor: str
) -> MemberOut:
    """Enrol, then let signup (and, for a full profile, profile-completed) rules fire."""
    member = service.enrol(conn, program, data, now)
    activities.member_event(conn, program, member.id, "signup", f"signup:{member.id}", now, actor)
    _profile_event(conn, program, member, now, actor)
    return member


def _profile_event(
    conn: Connection, program: ProgramVersion, member: MemberOut, now: datetime, actor: str
) -> None:
    if service.profile_complete(member):
        activities.member_event(
            conn, program, member.id, "profile_completed", f"profile:{member.id}", now, actor
        )


@router.get("", response_model=MemberPage)
def list_members(
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    q: str | None = Query(None, description="Exact e-mail, phone, loyalty number or external id"),
    email: str | None = None,
    phone: str | None = None,
    loyalty_number: str | None = None,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> MemberPage:
    filters = {
        k: v
        for k, v in {
            "q": q,
            "email": email.lower() if email else None,
            "phone": phone,
            "loyalty_number": loyalty_number,
            "status": status,
        }.items()
        if v
    }
    with svc.db.read() as conn:
        if "phone" in filters or "q" in filters:
            program = programs.current(conn, principal.program_id)
        if "phone" in filters:
            filters["phone"] = service.normalize_phone(filters["phone"], program.spec.country)
        if "q" in filters:  # q may be a phone number as the till types it: 070-123 45 67
            with contextlib.suppress(Problem):
                filters["q_phone"] = service.normalize_phone(filters["q"], program.spec.country)
        return service.list_page(conn, principal.program_id, cursor, limit, filters)


@router.get("/{ref}", response_model=MemberOut)
def get_member(
    ref: str, principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> MemberOut:
    """A member by id or by 12-digit loyalty number."""
    with svc.db.read() as conn:
        return service.get(conn, principal.program_id, ref)


@router.patch("/{ref}", response_model=MemberOut)
def update_member(
    ref: str,
    patch: MemberPatch,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> MemberOut:
    """Change contact details or consent; changing `status` needs the admin scope."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        member = service.update(
            conn, program, ref, patch, now, may_change_status=principal.may(Scope.admin)
        )
        _profile_event(conn, program, member, now, principal.actor)
        return member


@router.post("/{ref}/users", status_code=201, response_model=UserOut)
def add_user(
    ref: str,
    data: UserIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Add a user (a buyer...) to a company member; its activities earn for the member."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("add_user", {"member": ref, **data.model_dump(mode="json")}),
            201,
            lambda: service.add_user(conn, principal.program_id, ref, data, now),
            now,
        )


@router.get("/{ref}/users", response_model=UserList)
def list_users(
    ref: str, principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> UserList:
    """The member's current users."""
    with svc.db.read() as conn:
        return service.users(conn, principal.program_id, ref)


@router.delete("/{ref}/users/{external_id}", status_code=204)
def remove_user(
    ref: str,
    external_id: str,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> Response:
    """Remove a user from the member (its name and e-mail are erased)."""
    with svc.db.write() as conn:
        service.remove_user(conn, principal.program_id, ref, external_id, svc.clock.now())
    return Response(status_code=204)


@router.get("/{ref}/export")
def export_member(
    ref: str,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> JSONResponse:
    """Everything Trofast holds about the member, erased ones too (GDPR articles 15 and
    20): one JSON document whose keys are described in docs/privacy.md."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        document = privacy.export(conn, program, ref, svc.clock.now())
    return JSONResponse(
        document,
        headers={
            "Content-Disposition": f'attachment; filename="member-{document["member"]["id"]}.json"'
        },
    )


@router.post("/{ref}/erase", response_model=ErasureOut)
def erase_member(
    ref: str,
    data: ErasureIn,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Erase the member's personal data for good (GDPR article 17): points forfeited,
    vouchers cancelled, queued messages dropped; the books stay (docs/privacy.md). Erasing
    again changes nothing and answers the same."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("erase", ref, data.model_dump(mode="json")),
            200,
            lambda: privacy.erase(conn, program, ref, data.reason, now, principal.actor),
            now,
        )
