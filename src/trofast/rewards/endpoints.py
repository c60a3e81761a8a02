"""HTTP: the rewards catalogue, redemptions, vouchers at the checkout, gift-card code pools,
donations and paying with points."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body, Depends, Header, Query
from fastapi.responses import JSONResponse

from trofast.http import Services, idempotent, require, services
from trofast.kit import pagination
from trofast.kit.auth import Principal, Scope
from trofast.kit.errors import Problem
from trofast.members import service as members
from trofast.programs import service as programs
from trofast.programs.spec import SpecError, validate_data
from trofast.rewards import service
from trofast.rewards.schemas import (
    CodesIn,
    ConsumeIn,
    DonationOut,
    GrantIn,
    ImportOut,
    PayIn,
    PayOut,
    PerksOut,
    PoolOut,
    RedeemIn,
    RewardView,
    ValidateIn,
    ValidationOut,
    VoucherOut,
    VoucherPage,
)

router = APIRouter(tags=["rewards"])


@router.get("/v1/rewards", response_model=list[RewardView])
def list_rewards(
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    locale: str | None = Query(None, max_length=10),
    member: str | None = Query(None, description="Id or loyalty number: adds eligibility"),
) -> list[RewardView]:
    """The rewards on offer now, texts in `locale`."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        row = (
            None if member is None else members.resolve_account(conn, principal.program_id, member)
        )
        return service.catalogue(conn, program, svc.clock.now(), locale=locale, member=row)


@router.get("/v1/rewards/{reward_id}", response_model=RewardView)
def get_reward(
    reward_id: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    locale: str | None = Query(None, max_length=10),
) -> RewardView:
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return service.reward_view(conn, program, reward_id, locale)


@router.put("/v1/rewards/{reward_id}")
def put_reward(
    reward_id: str,
    reward: dict[str, Any] = Body(description="The reward as in the program document"),
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Add or replace a reward: a new program version (issued vouchers keep their terms)."""
    return _edit(svc, principal, reward_id, {**reward, "id": reward_id})


@router.delete("/v1/rewards/{reward_id}")
def delete_reward(
    reward_id: str,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    """Take a reward out of the catalogue: a new program version; issued vouchers stay valid."""
    return _edit(svc, principal, reward_id, None)


def _edit(
    svc: Services, principal: Principal, reward_id: str, reward: dict[str, Any] | None
) -> dict[str, Any]:
    now = svc.clock.now()
    with svc.db.write() as conn:
        current = programs.current(conn, principal.program_id)
        document = current.spec.model_dump(mode="json")
        rewards = [r for r in document["rewards"] if r["id"] != reward_id]
        if reward is None and len(rewards) == len(document["rewards"]):
            raise Problem(404, "reward_not_found", f"No reward {reward_id} in this program.")
        if reward is not None:
            rewards.append(reward)
        try:
            spec = validate_data({**document, "rewards": rewards})
        except SpecError as exc:
            errors = [{"path": path, "message": reason} for path, reason in exc.errors]
            raise Problem(
                422, "invalid_reward", "The reward is not valid.", errors=errors
            ) from None
        applied = programs.apply(conn, spec, now)
    return {"version": applied.version, "rewards": [r["id"] for r in rewards]}


@router.post("/v1/members/{ref}/redemptions", status_code=201, response_model=VoucherOut)
def redeem(
    ref: str,
    data: RedeemIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
    idempotency_key: str | None = Header(None),
) -> JSONResponse:
    """Redeem points for a reward: points held, then posted, and a voucher issued."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve_account(conn, principal.program_id, ref)
        return idempotent(
            conn,
            principal,
            idempotency_key,
            lambda: ("redeem", int(member.id), data.model_dump(mode="json")),
            201,
            lambda: service.redeem(
                conn,
                program,
                member,
                data.reward,
                data.reference,
                data.channel,
                now,
                principal.actor,
            ),
            now,
        )


@router.post("/v1/members/{ref}/grants", status_code=201, response_model=VoucherOut)
def grant(
    ref: str,
    data: GrantIn,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> VoucherOut:
    """Give a member a reward for free (goodwill, a prize); stock and limits still hold."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve_account(conn, principal.program_id, ref)
        return service.grant(
            conn,
            program,
            member,
            data.reward,
            data.reference,
            now,
            f"{principal.actor}: {data.reason}"[:100],
        )


@router.get("/v1/members/{ref}/vouchers", response_model=VoucherPage)
def member_vouchers(
    ref: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
    cursor: str | None = None,
    limit: int = Query(50, ge=1, le=500),
) -> VoucherPage:
    """The member's vouchers, newest first."""
    after = pagination.decode(cursor)
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        items, last = service.member_vouchers(
            conn, program, int(member.id), after, limit, svc.clock.now()
        )
    return VoucherPage(items=items, next_cursor=None if last is None else pagination.encode(last))


@router.get("/v1/members/{ref}/perks", response_model=PerksOut)
def member_perks(
    ref: str, principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> PerksOut:
    """Flags to check now: free shipping, early access, VIP service, event places."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve(conn, principal.program_id, ref)
        return service.perks(conn, program, int(member.id), svc.clock.now())


@router.post("/v1/members/{ref}/pay-with-points", status_code=201, response_model=PayOut)
def pay_with_points(
    ref: str,
    data: PayIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> PayOut:
    """Pay part of a purchase with points; returning the purchase gives them back."""
    now = svc.clock.now()
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        member = members.resolve_account(conn, principal.program_id, ref)
        if member.status != "active":
            raise Problem(409, "member_suspended", "A suspended member cannot spend points.")
        posted, amount = service.pay_with_points(
            conn,
            program,
            member,
            data.purchase_external_id,
            data.points,
            data.purchase_amount,
            now,
            principal.actor,
        )
    return PayOut(
        transaction_id=posted.transaction_id,
        points=-posted.points if not posted.replayed else data.points,
        amount=amount,
        currency=program.spec.currency,
        available=posted.balance.available,
        replayed=posted.replayed,
    )


@router.get("/v1/vouchers/{code}", response_model=VoucherOut)
def get_voucher(
    code: str,
    principal: Principal = Depends(require(Scope.read)),
    svc: Services = Depends(services),
) -> VoucherOut:
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return service.voucher(conn, program, code, svc.clock.now())


@router.post("/v1/vouchers/{code}/validate", response_model=ValidationOut)
def validate_voucher(
    code: str,
    data: ValidateIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> ValidationOut:
    """What the voucher takes off this basket, or why it cannot be used on it."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        discount, reason, detail, out = service.evaluate(
            conn, program, code, data.basket, svc.clock.now()
        )
    return ValidationOut(
        valid=reason is None, reason=reason, detail=detail, discount=discount, voucher=out
    )


@router.post("/v1/vouchers/{code}/consume", response_model=ValidationOut)
def consume_voucher(
    code: str,
    data: ConsumeIn,
    principal: Principal = Depends(require(Scope.pos)),
    svc: Services = Depends(services),
) -> ValidationOut:
    """Use the voucher on a purchase (its external_id): once; the same purchase replays."""
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        out, discount = service.consume(
            conn, program, code, data.purchase_external_id, data.basket, svc.clock.now()
        )
    return ValidationOut(valid=True, discount=discount, voucher=out)


@router.post("/v1/vouchers/{code}/cancel", response_model=VoucherOut)
def cancel_voucher(
    code: str, principal: Principal = Depends(require(Scope.pos)), svc: Services = Depends(services)
) -> VoucherOut:
    """Cancel an unused voucher; its points return to the lots they came from."""
    with svc.db.write() as conn:
        program = programs.current(conn, principal.program_id)
        return service.cancel(conn, program, code, svc.clock.now(), principal.actor)


@router.get("/v1/gift-code-pools", response_model=list[PoolOut])
def list_pools(
    principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> list[PoolOut]:
    """Every gift-card code pool: codes in total, left, and whether it runs low."""
    with svc.db.read() as conn:
        program = programs.current(conn, principal.program_id)
        return service.pools(conn, program)


@router.post("/v1/gift-code-pools/{pool}/codes", status_code=201, response_model=ImportOut)
def import_codes(
    pool: str,
    data: CodesIn,
    principal: Principal = Depends(require(Scope.admin)),
    svc: Services = Depends(services),
) -> ImportOut:
    """Add codes from a gift-card provider to a pool; codes already there are skipped."""
    with svc.db.write() as conn:
        return service.import_codes(conn, principal.program_id, pool, data.codes, svc.clock.now())


@router.get("/v1/reports/donations", response_model=list[DonationOut])
def donations(
    principal: Principal = Depends(require(Scope.read)), svc: Services = Depends(services)
) -> list[DonationOut]:
    """Per cause: donations made, points given and money donated."""
    with svc.db.read() as conn:
        return service.donations(conn, principal.program_id)
