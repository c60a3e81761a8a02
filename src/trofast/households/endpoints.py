"""HTTP: /v1/households (create, read, invite, accept, decline), leaving a household, and
points transfers between members (/v1/members/{ref}/transfers)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header
from fastapi.responses import JSONResponse

from trofast.households import service, transfers
from trofast.households.schemas import (
    HouseholdIn,
    HouseholdOut,
    InviteIn,
    InviteOut,
    LeaveOut,
    TransferIn,
    TransferOut,
)
from trofast.http import Services, idempotent, require, services
from trofast.kit.auth import Principal, Scope
from trofast.programs import service as programs

router = APIRouter(tags=["households"])


@router.post("/v1/households", status_code=201, response_model=HouseholdOut)
def create_household(
    data: HouseholdIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Create a household with `owner` as its first member (409 `already_in_household` if
    the owner is in one)."""
    now = svc.clock.now()
    pid = principal.program_id

    def handle() -> HouseholdOut:
        household_id = service.create(conn, pid, data.owner, data.name, now)
        return service.get(conn, pid, household_id)

    with svc.db.write() as conn:
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("household", data.model_dump(mode="json")),
            201,
            handle,
            now,
        )


@router.get("/v1/households/{household_id}", response_model=HouseholdOut)
def get_household(
    household_id: int,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
) -> HouseholdOut:
    """The household's members (longest-standing first) with their points, and the pooled
    totals."""
    with svc.db.read() as conn:
        return service.get(conn, principal.program_id, household_id)


@router.post("/v1/households/{household_id}/invites", status_code=201, response_model=InviteOut)
def invite(
    household_id: int,
    data: InviteIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Invite a member: the answer's `token` (shown once) accepts or declines within 14
    days."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("invite", household_id, data.model_dump(mode="json")),
            201,
            lambda: service.invite(conn, principal.program_id, household_id, data.member, now),
            now,
        )


@router.post("/v1/households/invites/{token}/accept", response_model=HouseholdOut)
def accept_invite(
    token: str,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> HouseholdOut:
    """The invited member joins; the answer is the household it joined."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        household_id = service.accept(conn, principal.program_id, token, now)
        return service.get(conn, principal.program_id, household_id)


@router.post("/v1/households/invites/{token}/decline", response_model=InviteOut)
def decline_invite(
    token: str,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> InviteOut:
    now = svc.clock.now()
    with svc.db.write() as conn:
        return service.decline(conn, principal.program_id, token, now)


@router.post("/v1/members/{ref}/household/leave", response_model=LeaveOut)
def leave_household(
    ref: str,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> LeaveOut:
    """Leave the household; an owner who leaves hands it to the longest-standing member."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        return service.leave(conn, principal.program_id, ref, now)


@router.post(
    "/v1/members/{ref}/transfers", status_code=201, response_model=TransferOut, tags=["points"]
)
def transfer_points(
    ref: str,
    data: TransferIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Give points to another member, under the program's `transfers:` policy. The sender's
    soonest-expiring points go first and keep their expiry; the reference makes it
    idempotent."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("transfer", ref, data.model_dump(mode="json")),
            201,
            lambda: transfers.transfer(conn, program, ref, data, now, principal.actor),
            now,
        )
