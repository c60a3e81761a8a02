"""HTTP: a member's balance, ledger history, spending and manual adjustments."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import JSONResponse

from trofast.activities import service as activities
from trofast.http import Services, idempotent, require, services
from trofast.kit import pagination
from trofast.kit.auth import Principal, Scope
from trofast.kit.errors import Problem, invalid
from trofast.kit.idempotency import request_hash
from trofast.ledger import repository, service
from trofast.ledger.schemas import (
    AdjustIn,
    BalanceView,
    LedgerEntry,
    LedgerPage,
    PostingOut,
    SpendIn,
    WalletView,
)
from trofast.members import service as members
from trofast.programs import service as programs
from trofast.rules.engine import lot_dates

router = APIRouter(prefix="/v1/members/{ref}", tags=["points"])


@router.get("/balance", response_model=BalanceView)
def balance(
    ref: str, principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> BalanceView:
    """Available and pending points, what expires soon, and lifetime totals."""
    with svc.db.read() as conn:
        member = members.resolve_account(conn, principal.program_id, ref)
        program = programs.current(conn, principal.program_id)
        now = svc.clock.now()
        figures = service.member_balance(conn, int(member.account_id), now)
        wallet_id = repository.member_account(conn, int(member.id), service.MONEY)
        wallet = None
        if wallet_id is not None:
            money = service.member_balance(conn, wallet_id, now)
            wallet = WalletView(
                currency=program.spec.currency,
                available=money["available"],
                pending=money["pending"],
            )
        stamps = activities.stamps(conn, principal.program_id, int(member.id))
    return BalanceView(
        member_id=member.id,
        point_name=program.spec.point_name,
        wallet=wallet,
        stamps=stamps,
        **figures,
    )


@router.get("/ledger", response_model=LedgerPage)
def ledger_history(
    ref: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> LedgerPage:
    """The member's ledger, newest first; each entry with its cause and rule version."""
    before = pagination.decode(cursor)
    with svc.db.read() as conn:
        member = members.resolve_account(conn, principal.program_id, ref)
        rows = repository.history(conn, int(member.id), int(member.account_id), before, limit + 1)
    items = [
        LedgerEntry(
            id=r.id,
            kind=r.kind,
            points=int(r.points) - int(r.pending_change),
            pending_change=int(r.pending_change),
            cause=r.activity_external_id or r.reference or r.reason or r.kind,
            activity_external_id=r.activity_external_id,
            rule=r.rule,
            program_version=r.program_version,
            actor=r.actor,
            reason=r.reason,
            reverses_id=r.reverses_id,
            effective_at=r.effective_at,
            created_at=r.created_at,
        )
        for r in rows[:limit]
    ]
    more = len(rows) > limit
    return LedgerPage(items=items, next_cursor=pagination.encode(items[-1].id) if more else None)


@router.post("/spend", status_code=201, response_model=PostingOut)
def spend(
    ref: str,
    data: SpendIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Spend points (or wallet money) now, soonest-expiring first. The reference makes it
    idempotent."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        member = members.resolve_account(conn, principal.program_id, ref)
        if member.status != "active":
            raise Problem(409, "member_suspended", "A suspended member cannot spend points.")
        account_id = int(member.account_id)
        if data.unit == service.MONEY:
            account_id = service.wallet_account(conn, principal.program_id, int(member.id))
        program = programs.current(conn, principal.program_id)
        op = service.Spend(
            member_id=int(member.id),
            account_id=account_id,
            points=data.points,
            reference=data.reference,
            idempotency_key=f"spend:{data.reference}",
            request_hash=request_hash(int(member.id), data.points, data.unit),
            unit=data.unit,
        )
        ctx = service.Context(principal.program_id, now, principal.actor, program.version)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("spend", int(member.id), data.model_dump()),
            201,
            lambda: _posting(service.post(conn, ctx, op)),
            now,
        )


@router.post("/adjustments", status_code=201, response_model=PostingOut)
def adjust(
    ref: str,
    data: AdjustIn,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """A manual correction with a reason: positive points credit, negative debit."""
    if data.points == 0:
        raise invalid("zero_adjustment", "An adjustment must move at least one point.")
    now = svc.clock.now()
    with svc.db.write() as conn:
        member = members.resolve_account(conn, principal.program_id, ref)
        program = programs.current(conn, principal.program_id)
        _, expires_at = lot_dates(program.spec, now)
        op = service.Adjust(
            member_id=int(member.id),
            account_id=int(member.account_id),
            points=data.points,
            reason=data.reason,
            idempotency_key=f"adjust:{data.reference}",
            request_hash=request_hash(int(member.id), data.points, data.reason),
            expires_at=expires_at,
        )
        ctx = service.Context(principal.program_id, now, principal.actor, program.version)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("adjust", int(member.id), data.model_dump()),
            201,
            lambda: _posting(service.post(conn, ctx, op)),
            now,
        )


def _posting(posted: service.Posted | None) -> PostingOut:
    assert posted is not None
    return PostingOut(
        transaction_id=posted.transaction_id,
        points=posted.points,
        available=posted.balance.available,
        pending=posted.balance.pending,
        replayed=posted.replayed,
    )
