"""HTTP: the partner API (`partner` scope keys only, each bound to one partner) and the
monthly settlement report (admin)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from trofast.http import Services, idempotent, require, services
from trofast.kit.auth import Principal, Scope
from trofast.partners import service
from trofast.partners.schemas import (
    PartnerActivitiesOut,
    PartnerActivityIn,
    PartnerActivityOut,
    PartnerConsumeIn,
    PartnerMemberOut,
    PartnerValidateIn,
    PartnerValidationOut,
    SettlementOut,
)
from trofast.programs import service as programs

router = APIRouter(tags=["partners"])
partner_key = require(Scope.partner)


@router.get("/v1/partner/members/{loyalty_number}", response_model=PartnerMemberOut)
def lookup_member(
    loyalty_number: str,
    principal: Principal = Depends(partner_key),
    svc: Services = Depends(services),
) -> PartnerMemberOut:
    """A member by loyalty number: the number and the name, nothing else."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        service.partner_of(program, principal.partner)
        return service.lookup(conn, principal.program_id, loyalty_number)


@router.post(
    "/v1/partner/activities",
    response_model=PartnerActivityOut,
    status_code=201,
    responses={200: {"description": "A replay of an external_id already accepted"}},
)
def post_activity(
    data: PartnerActivityIn,
    principal: Principal = Depends(partner_key),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """A purchase at the partner (earns under the partner's rate) or its return."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        partner = service.partner_of(program, principal.partner)
        out = None

        def handle() -> PartnerActivityOut:
            nonlocal out
            out = service.ingest(conn, program, partner, data, now, principal.actor)
            return out

        response = idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("partner-activity", partner.id, data.model_dump(mode="json")),
            201,
            handle,
            now,
        )
        if out is not None and out.replayed:
            response.status_code = 200
        return response


@router.get("/v1/partner/activities", response_model=PartnerActivitiesOut)
def list_activities(
    principal: Principal = Depends(partner_key),
    svc: Services = Depends(services),
    cursor: str | None = Query(None, max_length=100),
    limit: int = Query(50, ge=1, le=500),
) -> PartnerActivitiesOut:
    """This partner's own activities, oldest first."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        partner = service.partner_of(program, principal.partner)
        return service.activities(conn, principal.program_id, partner.id, cursor, limit)


@router.post("/v1/partner/vouchers/{code}/validate", response_model=PartnerValidationOut)
def validate_voucher(
    code: str,
    data: PartnerValidateIn,
    principal: Principal = Depends(partner_key),
    svc: Services = Depends(services),
) -> PartnerValidationOut:
    """What a voucher of this partner's reward takes off the basket, or why not."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        partner = service.partner_of(program, principal.partner)
        return service.validate_voucher(conn, program, partner, code, data.basket, svc.clock.now())


@router.post("/v1/partner/vouchers/{code}/consume", response_model=PartnerValidationOut)
def consume_voucher(
    code: str,
    data: PartnerConsumeIn,
    principal: Principal = Depends(partner_key),
    svc: Services = Depends(services),
) -> PartnerValidationOut:
    """Use a voucher of this partner's reward on a purchase at the partner, once."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        partner = service.partner_of(program, principal.partner)
        return service.consume_voucher(conn, program, partner, code, data, now, principal.actor)


@router.get("/v1/reports/settlement", response_model=SettlementOut)
def settlement(
    month: str = Query(..., description="YYYY-MM, in the program's time zone"),
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> SettlementOut:
    """Per partner for the month: points issued and their value (owed by the partner),
    points redeemed at it and their value (owed to it), and the net."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return service.settlement(conn, program, month)
