"""Partners: look up a member for a partner, partner purchases and returns that earn in
the host program, partner vouchers, and the monthly settlement.

Points move only through `ledger.post()`: a partner purchase is a `PartnerEarn` (the
points come from the partner's settlement account via issuance, so the partner owes their
value), a partner return a `PartnerTakeBack`, and a voucher of a partner reward used at the
partner a `PartnerRedeem` (redemption to the partner's account: the program owes it).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from trofast.kit import pagination
from trofast.kit.clock import month_bounds
from trofast.kit.errors import Problem, conflict, invalid, not_found
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import AnyRow
from trofast.ledger import service as ledger
from trofast.members import service as members
from trofast.members.loyalty_number import looks_like_number
from trofast.partners import repository
from trofast.partners.document import Partner
from trofast.partners.schemas import (
    PartnerActivitiesOut,
    PartnerActivityIn,
    PartnerActivityOut,
    PartnerConsumeIn,
    PartnerMemberOut,
    PartnerValidationOut,
    PartnerVoucherOut,
    SettlementLine,
    SettlementOut,
)
from trofast.programs.service import ProgramVersion, load_version
from trofast.rewards import service as rewards
from trofast.rewards.schemas import BasketIn, VoucherOut
from trofast.rules import engine


def partner_of(program: ProgramVersion, partner_id: str | None) -> Partner:
    """The key's partner in the current program version, or 403 (removed from the program)."""
    partner = program.spec.partner(partner_id)
    if partner is None:
        raise Problem(403, "partner_unknown", f"The program has no partner {partner_id!r}.")
    return partner


# -- members ----------------------------------------------------------------------------------


def lookup(conn: Connection, program_id: int, loyalty_number: str) -> PartnerMemberOut:
    """A member by loyalty number only (a partner never addresses members by id)."""
    if not looks_like_number(loyalty_number):
        raise not_found("member", loyalty_number)
    row = members.resolve(conn, program_id, loyalty_number)  # 410 for an erased member's card
    name = " ".join(part for part in (row.first_name, row.last_name) if part) or None
    return PartnerMemberOut(loyalty_number=row.loyalty_number, name=name)


# -- activities -------------------------------------------------------------------------------


def ingest(
    conn: Connection,
    program: ProgramVersion,
    partner: Partner,
    data: PartnerActivityIn,
    now: datetime,
    actor: str,
) -> PartnerActivityOut:
    """A partner purchase (earns under the partner's rate) or return; idempotent by
    `external_id`: the same body replays, another body is 409."""
    pid = program.program_id
    if data.currency != program.spec.currency:
        raise invalid("wrong_currency", f"The program's currency is {program.spec.currency}.")
    occurred_at = (data.occurred_at or now).astimezone(UTC)
    if occurred_at > now:
        raise invalid("occurred_in_future", "occurred_at is in the future.")
    if (data.type == "return") != (data.original_external_id is not None):
        raise invalid(
            "original_required", "A return names original_external_id; a purchase does not."
        )
    digest = request_hash(
        data.type,
        data.loyalty_number,
        data.amount,
        data.currency,
        data.occurred_at.isoformat() if data.occurred_at else None,
        data.original_external_id,
    )
    replayed = _replay(conn, pid, partner.id, data.external_id, digest)
    if replayed is not None:
        return replayed
    member = members.resolve_with_account(conn, pid, number=data.loyalty_number, lock=True)
    replayed = _replay(conn, pid, partner.id, data.external_id, digest)  # under the lock
    if replayed is not None:
        return replayed
    if member.status != "active":
        raise conflict("member_suspended", "The member cannot earn points now.")
    original = None
    if data.original_external_id is not None:
        original = repository.activity(conn, pid, partner.id, data.original_external_id)
        if original is None or original.type != "purchase":
            raise not_found("partner_purchase", data.original_external_id)
        if int(original.member_id) != int(member.id):
            raise invalid("wrong_member", "The purchase was made by another member.")
    values = {
        "program_id": pid,
        "partner": partner.id,
        "external_id": data.external_id,
        "type": data.type,
        "member_id": int(member.id),
        "amount": data.amount,
        "currency": data.currency,
        "points": 0,
        "original_id": None if original is None else int(original.id),
        "written_off": 0,
        "transaction_id": None,
        "request_hash": digest,
        "occurred_at": occurred_at,
        "created_at": now,
    }
    try:
        with conn.begin_nested():
            activity_id = repository.insert_activity(conn, values)
    except IntegrityError:
        replayed = _replay(conn, pid, partner.id, data.external_id, digest)
        if replayed is not None:
            return replayed
        raise conflict("external_id_in_flight", f"{data.external_id!r} is being posted.") from None
    ctx = ledger.Context(pid, now, actor, program.version)
    if original is None:
        _earn(conn, program, partner, ctx, member, activity_id, data.amount, occurred_at)
    else:
        _return(conn, program, partner, ctx, member, activity_id, original, data.amount)
    row = repository.activity(conn, pid, partner.id, data.external_id)
    assert row is not None
    return _out(conn, row)


def _earn(
    conn: Connection,
    program: ProgramVersion,
    partner: Partner,
    ctx: ledger.Context,
    member: AnyRow,
    activity_id: int,
    amount: int,
    occurred_at: datetime,
) -> None:
    points = engine.points_for_amount(amount, partner.earn)
    if points == 0:
        return
    vests_at, expires_at = engine.lot_dates(program.spec, occurred_at)
    posted = ledger.post(
        conn,
        ctx,
        ledger.PartnerEarn(
            ledger.Earn(
                member_id=int(member.id),
                account_id=int(member.account_id),
                credits=[ledger.Credit(points, f"partner:{partner.id}", vests_at, expires_at)],
                idempotency_key=f"partner:{partner.id}:{activity_id}",
                effective_at=occurred_at,
            ),
            partner.id,
        ),
    )
    assert posted is not None
    repository.set_transaction(
        conn, activity_id, points=points, transaction_id=posted.transaction_id
    )


def _return(
    conn: Connection,
    program: ProgramVersion,
    partner: Partner,
    ctx: ledger.Context,
    member: AnyRow,
    activity_id: int,
    original: AnyRow,
    amount: int,
) -> None:
    """Take back the returned share of the purchase's points (all that is left once the
    purchase is returned in full): its own lots first, under the program's policy."""
    amount_back, points_back, written_off_before = repository.returned(
        conn, int(original.id), activity_id
    )
    total, earned = int(original.amount), int(original.points)
    if amount_back + amount > total:
        raise invalid("return_too_large", f"Only {total - amount_back} of the purchase is left.")
    full = amount_back + amount >= total
    due = earned if full or total == 0 else earned * (amount_back + amount) // total
    points = due - points_back
    if points <= 0 or original.transaction_id is None:
        return
    own = repository.lots_of_transaction(conn, int(original.transaction_id))
    expired = sum(int(lot.expired) for lot in own) - written_off_before
    posted = ledger.post(
        conn,
        ctx,
        ledger.PartnerTakeBack(
            ledger.TakeBack(
                member_id=int(member.id),
                account_id=int(member.account_id),
                points=points,
                own_lot_ids=[int(lot.id) for lot in own],
                idempotency_key=f"partner:{partner.id}:{activity_id}",
                policy=program.spec.negative_balance.value,
                reverses_id=int(original.transaction_id),
                expired_allowance=max(expired, 0),
            ),
            partner.id,
            points,
        ),
    )
    assert posted is not None
    repository.set_transaction(
        conn,
        activity_id,
        points=points,
        written_off=posted.written_off,
        transaction_id=posted.transaction_id,
    )


def _replay(
    conn: Connection, program_id: int, partner: str, external_id: str, digest: str
) -> PartnerActivityOut | None:
    row = repository.activity(conn, program_id, partner, external_id)
    if row is None:
        return None
    if row.request_hash != digest:
        raise conflict("external_id_reused", f"{external_id!r} was sent before with another body.")
    return _out(conn, row, replayed=True)


def _out(conn: Connection, row: AnyRow, *, replayed: bool = False) -> PartnerActivityOut:
    original = None
    if row.original_id is not None:
        original = repository.external_id_of(conn, int(row.original_id))
    return PartnerActivityOut(
        id=int(row.id),
        type=str(row.type),
        external_id=str(row.external_id),
        partner=str(row.partner),
        loyalty_number=str(row.loyalty_number),
        amount=int(row.amount),
        currency=str(row.currency),
        points=int(row.points),
        original_external_id=original,
        occurred_at=row.occurred_at,
        replayed=replayed,
    )


def activities(
    conn: Connection, program_id: int, partner: str, cursor: str | None, limit: int
) -> PartnerActivitiesOut:
    """A page of the partner's own activities, oldest first."""
    rows = repository.page(conn, program_id, partner, pagination.decode(cursor), limit + 1)
    items = [_out(conn, row) for row in rows[:limit]]
    more = len(rows) > limit
    return PartnerActivitiesOut(
        items=items, next_cursor=pagination.encode(items[-1].id) if more else None
    )


# -- vouchers ---------------------------------------------------------------------------------


def _partner_voucher(
    conn: Connection, program: ProgramVersion, partner: Partner, code: str, now: datetime
) -> VoucherOut:
    """The voucher, if it is of a reward of this partner; else 404 (never another's)."""
    try:
        out = rewards.voucher(conn, program, code, now)
    except Problem as exc:
        if exc.status == 404:
            raise not_found("voucher", code) from None
        raise
    if out.benefit.get("partner") != partner.id:
        raise not_found("voucher", code)
    return out


def _voucher_view(out: VoucherOut) -> PartnerVoucherOut:
    return PartnerVoucherOut(
        code=out.code,
        reward=out.reward,
        type=out.type,
        name=out.name,
        status=out.status,
        points=out.points,
        expires_at=out.expires_at,
        used_at=out.used_at,
        used_by=out.used_by,
        replayed=out.replayed,
    )


def validate_voucher(
    conn: Connection,
    program: ProgramVersion,
    partner: Partner,
    code: str,
    basket: BasketIn,
    now: datetime,
) -> PartnerValidationOut:
    _partner_voucher(conn, program, partner, code, now)
    discount, reason, detail, out = rewards.evaluate(
        conn, program, code, basket, now, at_partner=partner.id
    )
    return PartnerValidationOut(
        valid=reason is None,
        reason=reason,
        detail=detail,
        discount=discount,
        voucher=_voucher_view(out),
    )


def consume_voucher(
    conn: Connection,
    program: ProgramVersion,
    partner: Partner,
    code: str,
    data: PartnerConsumeIn,
    now: datetime,
    actor: str,
) -> PartnerValidationOut:
    """Use a partner voucher at the partner, once; its points, redeemed at the partner,
    are then owed to the partner (at its redemption price)."""
    _partner_voucher(conn, program, partner, code, now)
    purchase = data.purchase_external_id
    out, discount = rewards.consume(
        conn, program, code, purchase, data.basket, now, at_partner=partner.id
    )
    if out.points > 0:
        ledger.post(
            conn,
            ledger.Context(program.program_id, now, actor, program.version),
            ledger.PartnerRedeem(
                partner=partner.id,
                points=out.points,
                reference=f"voucher:{out.code}",
                idempotency_key=f"partner-redeem:{out.code}:{purchase}",
                member_id=out.member_id,
            ),
        )
    return PartnerValidationOut(valid=True, discount=discount, voucher=_voucher_view(out))


# -- settlement -------------------------------------------------------------------------------


def value(hundredths: int) -> int:
    """Money in minor units of a sum of points x price (1/100 minor units per point), rounded
    down once on the month's total (as `point_value` is)."""
    return hundredths // 100


def settlement(conn: Connection, program: ProgramVersion, month: str) -> SettlementOut:
    """Per partner, for one calendar month: points it issued (net of its returns) and
    their value, owed by the partner; points redeemed at it and their value, owed to it.
    Each flow is valued at the prices in force when it happened: those of the program
    version it was posted under (a return: that of the purchase it returns), so a price
    change never re-values a past month."""
    start, end = month_bounds(program.spec.zone, month)
    flows = repository.settlement_flows(conn, program.program_id, start, end)
    versions = {program.version: program}

    def priced(partner_id: str, version: int | None) -> Partner | None:
        """The partner's prices under `version` (none recorded: the current one)."""
        if version is None:
            version = program.version
        if version not in versions:
            versions[version] = load_version(conn, program.program_id, version)
        return versions[version].spec.partner(partner_id)

    known = [p.id for p in program.spec.partners]
    ids = known + sorted({partner for partner, _, _ in flows} - set(known))
    lines = []
    for partner_id in ids:
        issued = redeemed = issued_hundredths = redeemed_hundredths = 0
        for (flow_partner, kind, version), (debits, credits) in flows.items():
            if flow_partner != partner_id:
                continue
            prices = priced(partner_id, version)
            if kind == ledger.PARTNER_ISSUANCE:
                issued += debits - credits
                issued_hundredths += (debits - credits) * (prices.point_price if prices else 0)
            elif kind == ledger.PARTNER_REDEMPTION:
                redeemed += credits
                redeemed_hundredths += credits * (prices.redemption_price if prices else 0)
        partner = program.spec.partner(partner_id)
        issued_value, redeemed_value = value(issued_hundredths), value(redeemed_hundredths)
        lines.append(
            SettlementLine(
                partner=partner_id,
                name=partner.name if partner else partner_id,
                points_issued=issued,
                issued_value=issued_value,
                points_redeemed=redeemed,
                redeemed_value=redeemed_value,
                net=issued_value - redeemed_value,
            )
        )
    return SettlementOut(
        program=program.spec.key, month=month, currency=program.spec.currency, partners=lines
    )
