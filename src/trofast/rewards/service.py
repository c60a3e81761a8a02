"""Rewards: the catalogue, redeeming points for vouchers, using them at a checkout,
cancelling, gift-card code pools, donations and paying with points.

Points move only through `ledger.post()`: a redemption holds the points on their lots
and settles the hold once the voucher is written (two-phase, in the caller's
transaction); cancelling an unused voucher refunds them to the lots they came from.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection

from trofast.kit.errors import Problem, conflict, invalid, not_found
from trofast.kit.idempotency import request_hash
from trofast.kit.orm import AnyRow
from trofast.ledger import repository as ledger_repository
from trofast.ledger import service as ledger
from trofast.memberships import service as memberships
from trofast.notify.outbox import raise_event
from trofast.programs.service import ProgramVersion
from trofast.rewards import repository
from trofast.rewards.document import COMMON_FIELDS, POOL_ID, Channel, Period, Reward, localized
from trofast.rewards.schemas import (
    BasketIn,
    DonationOut,
    ImportOut,
    PerkOut,
    PerksOut,
    PoolOut,
    RewardView,
    VoucherOut,
)
from trofast.tiers import service as tiers

#: Voucher codes: 3 groups of 4 from an alphabet without look-alikes (about 62 bits).
_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"
#: Types fulfilled at once when redeemed: their voucher is born used.
_FULFILLED_AT_ONCE = frozenset({"donation", "cashback"})


def new_code() -> str:
    """An unguessable voucher code such as `TF-7KQ2-M9XD-4HPA`."""
    chars = "".join(secrets.choice(_ALPHABET) for _ in range(12))
    return f"TF-{chars[:4]}-{chars[4:8]}-{chars[8:]}"


# -- the catalogue ----------------------------------------------------------------------------


def catalogue(
    conn: Connection,
    program: ProgramVersion,
    now: datetime,
    *,
    locale: str | None = None,
    member: AnyRow | None = None,
) -> list[RewardView]:
    """The rewards on offer now; with a member, whether each is eligible and affordable."""
    issued = repository.issued_counts(conn, program.program_id)
    available = None if member is None else ledger.Balance.of(member).available
    standing = None if member is None else _standing(conn, program, int(member.id), now)
    return [
        _view(program, reward, issued.get(reward.id, 0), locale, member, standing, available)
        for reward in program.spec.rewards
        if reward.on_offer(now)
    ]


def reward_view(
    conn: Connection, program: ProgramVersion, reward_id: str, locale: str | None
) -> RewardView:
    reward = _reward(program, reward_id)
    issued = repository.issued_counts(conn, program.program_id).get(reward.id, 0)
    return _view(program, reward, issued, locale, None, None, None)


def _view(
    program: ProgramVersion,
    reward: Reward,
    issued: int,
    locale: str | None,
    member: AnyRow | None,
    standing: tuple[str | None, str | None] | None,
    available: int | None,
) -> RewardView:
    fallback = program.spec.locales[0]
    return RewardView(
        id=reward.id,
        type=reward.type,
        name=localized(reward.name, locale, fallback),
        description=localized(reward.description, locale, fallback),
        image=reward.image,
        cost=reward.cost,
        channels=reward.channels,
        valid_days=reward.valid_days,
        stock_left=None if reward.stock is None else max(reward.stock - issued, 0),
        available_from=reward.available_from,
        available_until=reward.available_until,
        eligible=(
            None
            if member is None or standing is None
            else _eligible(program, reward, member, *standing)
        ),
        affordable=None if available is None else available >= reward.cost,
        details=reward.model_dump(mode="json", exclude=set(COMMON_FIELDS)),
    )


def _reward(program: ProgramVersion, reward_id: str) -> Reward:
    reward = program.spec.reward(reward_id)
    if reward is None:
        raise not_found("reward", reward_id)
    return reward


def _tier(conn: Connection, program: ProgramVersion, member_id: int) -> str | None:
    return tiers.tiers_of(conn, program.spec, program.program_id, [member_id]).get(member_id)


def _standing(
    conn: Connection, program: ProgramVersion, member_id: int, now: datetime
) -> tuple[str | None, str | None]:
    """The member's tier and running membership plan."""
    plans = memberships.plans_of(conn, program.spec, program.program_id, [member_id], now)
    return _tier(conn, program, member_id), plans.get(member_id)


def _eligible(
    program: ProgramVersion, reward: Reward, member: AnyRow, tier: str | None, plan: str | None
) -> bool:
    """Members with any of the reward's tags (segments), in any of its tiers, and on a
    membership plan that offers it if any plan lists it as a members-only reward."""
    tags = set(member.tags or [])
    if reward.eligible.tags and not tags & set(reward.eligible.tags):
        return False
    if reward.eligible.tiers and tier not in reward.eligible.tiers:
        return False
    offering = [p.id for p in program.spec.membership_plans if reward.id in p.rewards]
    return not offering or plan in offering


# -- redeeming and granting -------------------------------------------------------------------


def redeem(
    conn: Connection,
    program: ProgramVersion,
    member: AnyRow,
    reward_id: str,
    reference: str,
    channel: Channel | None,
    now: datetime,
    actor: str,
) -> VoucherOut:
    """Spend the reward's cost in points for a voucher; the reference makes it idempotent."""
    reward = _reward(program, reward_id)
    replayed = _replay(conn, program, member, reward_id, reference)
    if replayed is not None:
        return replayed
    if reward.cost == 0:
        raise conflict("reward_not_redeemable", f"{reward_id!r} is only granted, not redeemed.")
    if channel is not None and channel not in reward.channels:
        raise invalid("wrong_channel", f"{reward_id!r} cannot be redeemed {channel.value}.")
    if not _eligible(program, reward, member, *_standing(conn, program, int(member.id), now)):
        raise Problem(403, "not_eligible", f"This member may not redeem {reward_id!r}.")
    return _issue(conn, program, member, reward, reference, now, actor, paid=True)


def grant(
    conn: Connection,
    program: ProgramVersion,
    member: AnyRow,
    reward_id: str,
    reference: str,
    now: datetime,
    actor: str,
) -> VoucherOut:
    """Give a reward for free (a rule, a tier, an admin): stock and limits still hold."""
    reward = _reward(program, reward_id)
    replayed = _replay(conn, program, member, reward_id, reference)
    if replayed is not None:
        return replayed
    return _issue(conn, program, member, reward, reference, now, actor, paid=False)


def _replay(
    conn: Connection, program: ProgramVersion, member: AnyRow, reward_id: str, reference: str
) -> VoucherOut | None:
    existing = repository.voucher_by_reference(conn, program.program_id, reference)
    if existing is None:
        return None
    if int(existing.member_id) != int(member.id) or existing.reward != reward_id:
        raise conflict("reference_reused", f"{reference!r} was used for another redemption.")
    return _out(conn, program, existing, replayed=True)


def _issue(
    conn: Connection,
    program: ProgramVersion,
    member: AnyRow,
    reward: Reward,
    reference: str,
    now: datetime,
    actor: str,
    *,
    paid: bool,
) -> VoucherOut:
    pid = program.program_id
    if member.status != "active":
        raise conflict("member_suspended", "A suspended member cannot redeem rewards.")
    if not reward.on_offer(now):
        raise conflict("reward_not_available", f"{reward.id!r} is not on offer now.")
    # The member's account row is the lock that serialises one member's redemptions, so
    # per-member limits hold under concurrency; the stock row does the same for stock.
    ledger.lock_account(conn, pid, int(member.account_id))
    # A twin request with the same reference may have committed while we waited.
    replayed = _replay(conn, program, member, reward.id, reference)
    if replayed is not None:
        return replayed
    if reward.limit is not None:
        since = _period_start(reward.limit.per, now, program)
        held = repository.count_member_vouchers(conn, pid, int(member.id), reward.id, since)
        if held >= reward.limit.count:
            raise conflict(
                "member_limit_reached",
                f"At most {reward.limit.count} of {reward.id!r} per member "
                f"({reward.limit.per.value}).",
            )
    if reward.stock is not None and not repository.take_stock(conn, pid, reward.id, reward.stock):
        raise conflict("out_of_stock", f"{reward.id!r} is sold out.")
    gift = None
    if reward.type == "gift_card" and reward.pool is not None:
        gift = repository.take_gift_code(conn, pid, reward.pool)
        if gift is None:
            raise conflict("out_of_stock", f"The gift-card pool {reward.pool!r} is empty.")
    ctx = ledger.Context(pid, now, actor, program.version)
    transaction_id = None
    points = reward.cost if paid else 0
    if points:
        hold = ledger.post(
            conn,
            ctx,
            ledger.Hold(
                member_id=int(member.id),
                account_id=int(member.account_id),
                points=points,
                reference=f"reward:{reference}",
                idempotency_key=f"hold:reward:{reference}",
                request_hash=request_hash(int(member.id), reward.id, points),
            ),
        )
        assert hold is not None
        settled = ledger.post(
            conn, ctx, ledger.Settle(hold.transaction_id, f"redeem:reward:{reference}")
        )
        assert settled is not None
        transaction_id = settled.transaction_id
    if reward.type == "cashback":
        wallet = ledger.wallet_account(conn, pid, int(member.id))
        ledger.post(
            conn,
            ctx,
            ledger.Earn(
                member_id=int(member.id),
                account_id=wallet,
                credits=[ledger.Credit(reward.amount, f"reward:{reward.id}")],
                idempotency_key=f"cashback:reward:{reference}",
                effective_at=now,
                unit=ledger.MONEY,
            ),
        )
    fulfilled = reward.type in _FULFILLED_AT_ONCE
    values = {
        "program_id": pid,
        "member_id": int(member.id),
        "reward": reward.id,
        "type": reward.type,
        "code": new_code(),
        "status": "used" if fulfilled else "issued",
        "points": points,
        "reference": reference,
        "benefit": reward.model_dump(mode="json"),
        "channel": None,
        "program_version": program.version,
        "transaction_id": transaction_id,
        "gift_code_id": None if gift is None else int(gift.id),
        "issued_at": now,
        "expires_at": None if reward.valid_days is None else now + timedelta(reward.valid_days),
        "used_at": now if fulfilled else None,
        "used_by": None,
        "cancelled_at": None,
    }
    voucher_id = repository.insert_voucher(conn, values)
    if gift is not None and reward.type == "gift_card" and reward.pool is not None:
        repository.assign_gift_code(conn, int(gift.id), voucher_id)
        _, left = repository.pool_size(conn, pid, reward.pool)
        if left <= reward.low_stock:
            raise_event(
                conn,
                pid,
                "gift_codes.low",
                f"gift-codes-low:{reward.pool}:{left}",
                {"pool": reward.pool, "available": left, "low_stock": reward.low_stock},
                now,
            )
    row = repository.voucher_by_code(conn, pid, str(values["code"]))
    assert row is not None
    out = _out(conn, program, row)
    _announce(conn, pid, "reward.redeemed", out, now)
    return out


def _announce(
    conn: Connection, program_id: int, topic: str, voucher: VoucherOut, now: datetime
) -> None:
    """Raise `topic` about a voucher (fulfilment by the business's own systems hangs on it)."""
    payload = voucher.model_dump(mode="json", exclude={"replayed", "gift_card_code"})
    key = f"{topic}:{voucher.code}:{now.isoformat()}"
    raise_event(conn, program_id, topic, key, payload, now)


def _period_start(period: Period, now: datetime, program: ProgramVersion) -> datetime | None:
    """Start of the calendar day/week/month/year around `now` in the program's zone."""
    if period is Period.ever:
        return None
    local = now.astimezone(program.spec.zone)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period is Period.week:
        day -= timedelta(days=day.weekday())
    elif period is Period.month:
        day = day.replace(day=1)
    elif period is Period.year:
        day = day.replace(month=1, day=1)
    return day


# -- vouchers ---------------------------------------------------------------------------------


def voucher(conn: Connection, program: ProgramVersion, code: str, now: datetime) -> VoucherOut:
    return _out(conn, program, _voucher(conn, program.program_id, code), now=now)


def _voucher(conn: Connection, program_id: int, code: str, *, lock: bool = False) -> AnyRow:
    row = repository.voucher_by_code(conn, program_id, code.strip().upper(), lock=lock)
    if row is None:
        raise not_found("voucher", code)
    return row


def _status(row: AnyRow, now: datetime) -> str:
    if row.status == "issued" and row.expires_at is not None and row.expires_at <= now:
        return "expired"
    return str(row.status)


def _out(
    conn: Connection,
    program: ProgramVersion,
    row: AnyRow,
    *,
    now: datetime | None = None,
    replayed: bool = False,
) -> VoucherOut:
    benefit = dict(row.benefit)
    name = localized(benefit.pop("name", None), None, program.spec.locales[0])
    benefit.pop("description", None)
    return VoucherOut(
        code=row.code,
        member_id=row.member_id,
        reward=row.reward,
        type=row.type,
        status=_status(row, now) if now is not None else str(row.status),
        points=row.points,
        name=name,
        benefit=benefit,
        gift_card_code=(
            None if row.gift_code_id is None else repository.gift_code(conn, int(row.gift_code_id))
        ),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        used_at=row.used_at,
        used_by=row.used_by,
        cancelled_at=row.cancelled_at,
        replayed=replayed,
    )


def member_vouchers(
    conn: Connection,
    program: ProgramVersion,
    member_id: int,
    after_id: int,
    limit: int,
    now: datetime,
) -> tuple[list[VoucherOut], int | None]:
    """A page of the member's vouchers, newest first, and the id to continue after."""
    rows = repository.member_vouchers(conn, program.program_id, member_id, after_id, limit + 1)
    items = [_out(conn, program, row, now=now) for row in rows[:limit]]
    return items, int(rows[limit - 1].id) if len(rows) > limit else None


def evaluate(
    conn: Connection,
    program: ProgramVersion,
    code: str,
    basket: BasketIn,
    now: datetime,
    *,
    at_partner: str | None = None,
) -> tuple[int, str | None, str | None, VoucherOut]:
    """What the voucher gives this basket at the program's till (or at the partner
    `at_partner`): (discount, reason code if not, detail, voucher)."""
    row = _voucher(conn, program.program_id, code)
    out = _out(conn, program, row, now=now)
    reason = _elsewhere(row, at_partner) or _unusable(row, now)
    if reason is not None:
        return 0, reason[0], reason[1], out
    discount, why = basket_discount(row.type, dict(row.benefit), basket, program.spec.currency)
    return discount, None if why is None else why[0], None if why is None else why[1], out


def _elsewhere(row: AnyRow, at_partner: str | None) -> tuple[str, str] | None:
    """Why a partner reward's voucher cannot be used here: only its partner delivers it
    (and only then does the program owe the partner, docs/partners.md)."""
    partner = row.benefit.get("partner")
    if partner is None or partner == at_partner:
        return None
    return "partner_voucher", f"A reward of partner {partner!r}: it is used at the partner."


def _unusable(row: AnyRow, now: datetime) -> tuple[str, str] | None:
    status = _status(row, now)
    if status == "issued":
        return None
    return {
        "used": ("voucher_used", f"Used on {row.used_by or 'redemption'}."),
        "expired": ("voucher_expired", "The voucher has expired."),
        "cancelled": ("voucher_cancelled", "The voucher was cancelled."),
    }[status]


def basket_discount(
    kind: str, benefit: dict[str, Any], basket: BasketIn, currency: str
) -> tuple[int, tuple[str, str] | None]:
    """The money a checkout voucher takes off `basket`, or why it does not apply."""
    if basket.currency is not None and basket.currency != currency:
        return 0, ("wrong_currency", f"The program's currency is {currency}.")
    if basket.channel.value not in benefit.get("channels", []):
        return 0, ("wrong_channel", f"Not valid {basket.channel.value}.")
    if kind == "discount":
        if basket.amount < int(benefit.get("min_order", 0)):
            return 0, ("below_min_order", f"The basket must be at least {benefit['min_order']}.")
        scope = benefit.get("scope") or {}
        skus, categories = scope.get("skus") or [], scope.get("categories") or []
        if skus or categories:
            base = sum(
                line.amount
                for line in basket.lines
                if line.sku in skus or (line.category is not None and line.category in categories)
            )
            if base == 0:
                return 0, ("no_qualifying_lines", "No line of the basket is covered.")
        else:
            base = basket.amount
        if benefit.get("amount") is not None:
            return min(int(benefit["amount"]), base), None
        off = base * int(benefit["percent"]) // 100
        cap = benefit.get("max_discount")
        return (off if cap is None else min(off, int(cap))), None
    if kind == "free_product":
        for line in basket.lines:
            if line.sku == benefit["sku"]:
                return line.amount // line.quantity, None
        return 0, ("product_not_in_basket", f"Add {benefit['sku']} to the basket.")
    if kind == "free_shipping":
        return sum(line.amount for line in basket.lines if line.category == "shipping"), None
    return 0, None  # flags and custom vouchers give no money off


def consume(
    conn: Connection,
    program: ProgramVersion,
    code: str,
    purchase_external_id: str,
    basket: BasketIn | None,
    now: datetime,
    *,
    at_partner: str | None = None,
) -> tuple[VoucherOut, int]:
    """Use the voucher on a purchase, once: the same purchase again replays, any other is 409.
    A partner reward's voucher is used only at its partner (`at_partner`)."""
    row = _voucher(conn, program.program_id, code, lock=True)
    if row.status == "used" and row.used_by == purchase_external_id:
        out = _out(conn, program, row, now=now, replayed=True)
        discount = (
            0
            if basket is None
            else basket_discount(row.type, dict(row.benefit), basket, program.spec.currency)[0]
        )
        return out, discount
    reason = _elsewhere(row, at_partner) or _unusable(row, now)
    if reason is not None:
        raise conflict(reason[0], reason[1])
    discount = 0
    if basket is not None:
        discount, why = basket_discount(row.type, dict(row.benefit), basket, program.spec.currency)
        if why is not None:
            raise invalid(why[0], why[1])
    repository.update_voucher(
        conn, int(row.id), status="used", used_at=now, used_by=purchase_external_id
    )
    out = _out(conn, program, _voucher(conn, program.program_id, code), now=now)
    _announce(conn, program.program_id, "voucher.used", out, now)
    return out, discount


def cancel(
    conn: Connection, program: ProgramVersion, code: str, now: datetime, actor: str
) -> VoucherOut:
    """Cancel an unused voucher: its points go back to the lots they came from."""
    row = _voucher(conn, program.program_id, code, lock=True)
    if row.status == "cancelled":
        return _out(conn, program, row, now=now, replayed=True)
    if row.gift_code_id is not None:
        raise conflict("voucher_not_cancellable", "A gift card's code was handed out already.")
    reason = _unusable(row, now)
    if reason is not None:
        raise conflict(reason[0], reason[1])
    if row.transaction_id is not None and int(row.points) > 0:
        ctx = ledger.Context(program.program_id, now, actor, program.version)
        ledger.post(
            conn,
            ctx,
            ledger.Refund(
                int(row.transaction_id), int(row.points), f"cancel:{row.code}", "voucher cancelled"
            ),
        )
    if row.benefit.get("stock") is not None:
        repository.return_stock(conn, program.program_id, str(row.reward))
    repository.update_voucher(conn, int(row.id), status="cancelled", cancelled_at=now)
    out = _out(conn, program, _voucher(conn, program.program_id, code), now=now)
    _announce(conn, program.program_id, "voucher.cancelled", out, now)
    return out


def take_back_grant(
    conn: Connection, program: ProgramVersion, reference: str, now: datetime, actor: str
) -> tuple[str | None, str | None]:
    """Cancel the voucher granted under `reference` (a rule's grant that a return takes back)
    unless it cannot be: (its code, None) when cancelled; (its code, the problem code, e.g.
    `voucher_used`) when it stays; (None, None) when none was granted."""
    row = repository.voucher_by_reference(conn, program.program_id, reference)
    if row is None:
        return None, None
    try:
        with conn.begin_nested():
            cancel(conn, program, str(row.code), now, actor)
    except Problem as problem:
        return str(row.code), problem.code
    return str(row.code), None


def restore_on_return(
    conn: Connection, program: ProgramVersion, purchase_external_id: str, now: datetime
) -> int:
    """A returned purchase gives back the vouchers used on it whose reward says so."""
    restored = 0
    for row in repository.vouchers_used_by(conn, program.program_id, purchase_external_id):
        if not row.benefit.get("restore_on_return", False):
            continue
        if row.expires_at is not None and row.expires_at <= now:
            continue
        repository.update_voucher(conn, int(row.id), status="issued", used_at=None, used_by=None)
        out = _out(conn, program, _voucher(conn, program.program_id, str(row.code)), now=now)
        _announce(conn, program.program_id, "voucher.restored", out, now)
        restored += 1
    return restored


def vouchers_due_to_expire(conn: Connection, program_id: int, now: datetime) -> bool:
    return repository.first_voucher_due(conn, program_id, now) is not None


def expire_vouchers(conn: Connection, program_id: int, now: datetime) -> int:
    """Mark unused vouchers past their end as expired (their points are not given back)."""
    return repository.expire_vouchers(conn, program_id, now)


def perks(conn: Connection, program: ProgramVersion, member_id: int, now: datetime) -> PerksOut:
    """The flags a shop or support system checks: free shipping, early access, VIP perks,
    event places, from the member's valid, unused vouchers and from the member's tier."""
    value_of = {"early_access": "access", "service_perk": "perk", "event": "event"}
    items = [
        PerkOut(
            type=row.type,
            reward=row.reward,
            value=row.benefit.get(value_of.get(row.type, ""), None),
            code=row.code,
            expires_at=row.expires_at,
        )
        for row in repository.open_vouchers(conn, program.program_id, member_id, now)
        if row.type in ("free_shipping", "early_access", "service_perk", "event")
    ]
    tier_id, plan_id = _standing(conn, program, member_id, now)
    tier = None if tier_id is None else program.spec.tier(tier_id)
    tier_perks = [] if tier is None else list(tier.perks)
    plan = next((p for p in program.spec.membership_plans if p.id == plan_id), None)
    plan_perks = [] if plan is None else list(plan.perks)
    shipping = "free_shipping" in tier_perks + plan_perks or any(
        p.type == "free_shipping" for p in items
    )
    return PerksOut(
        member_id=member_id,
        free_shipping=shipping,
        tier=tier_id,
        tier_perks=tier_perks,
        plan=plan_id,
        plan_perks=plan_perks,
        perks=items,
    )


# -- gift-card code pools and donations ------------------------------------------------------


def import_codes(
    conn: Connection, program_id: int, pool: str, codes: list[str], now: datetime
) -> ImportOut:
    """Add a provider's codes to `pool`; codes already in it are skipped, not doubled."""
    if not re.match(POOL_ID, pool):
        raise invalid("invalid_pool", "A pool name is lower-case letters, digits, - and _.")
    cleaned = list(dict.fromkeys(code.strip() for code in codes if code.strip()))
    if any(len(code) > 100 for code in cleaned):
        raise invalid("invalid_code", "A gift-card code has at most 100 characters.")
    before, _ = repository.pool_size(conn, program_id, pool)
    repository.add_gift_codes(conn, program_id, pool, cleaned, now)
    total, available = repository.pool_size(conn, program_id, pool)
    added = total - before
    return ImportOut(pool=pool, added=added, duplicates=len(codes) - added, available=available)


def pools(conn: Connection, program: ProgramVersion) -> list[PoolOut]:
    """Every pool the program has codes in or a reward draws from, and whether it runs low."""
    sizes = repository.pool_sizes(conn, program.program_id)
    thresholds: dict[str, int] = {}
    for reward in program.spec.rewards:
        if reward.type == "gift_card" and reward.pool is not None:
            thresholds[reward.pool] = max(thresholds.get(reward.pool, 0), reward.low_stock)
    out = []
    for pool in sorted(set(sizes) | set(thresholds)):
        total, available = sizes.get(pool, (0, 0))
        low = thresholds.get(pool)
        out.append(
            PoolOut(
                pool=pool,
                total=total,
                available=available,
                low_stock=low,
                running_low=low is not None and available <= low,
            )
        )
    return out


def donations(conn: Connection, program_id: int) -> list[DonationOut]:
    return [
        DonationOut(cause=r.cause, donations=r.donations, points=r.points, amount=r.amount)
        for r in repository.donation_totals(conn, program_id)
    ]


# -- pay with points --------------------------------------------------------------------------


def points_value(program: ProgramVersion, points: int) -> int:
    """Money (minor units, rounded down) that `points` pay at the program's valuation."""
    return points * program.spec.point_value // 100


def pay_with_points(
    conn: Connection,
    program: ProgramVersion,
    member: AnyRow,
    purchase_external_id: str,
    points: int,
    purchase_amount: int | None,
    now: datetime,
    actor: str,
) -> tuple[ledger.Posted, int]:
    """Spend points as money inside a purchase; returning the purchase gives them back."""
    policy = program.spec.pay_with_points
    if not policy.enabled or program.spec.point_value == 0:
        raise conflict("pay_with_points_disabled", "This program does not take points as payment.")
    if points < policy.min_points:
        raise invalid("too_few_points", f"Pay at least {policy.min_points} points.")
    amount = points_value(program, points)
    if purchase_amount is not None and amount > purchase_amount * policy.max_share_percent // 100:
        raise invalid(
            "points_share_too_large",
            f"Points may pay at most {policy.max_share_percent} % of a purchase.",
        )
    ctx = ledger.Context(program.program_id, now, actor, program.version)
    posted = ledger.post(
        conn,
        ctx,
        ledger.Spend(
            member_id=int(member.id),
            account_id=int(member.account_id),
            points=points,
            reference=f"pay:{purchase_external_id}",
            idempotency_key=f"pay:{purchase_external_id}",
            request_hash=request_hash(int(member.id), points),
        ),
    )
    assert posted is not None
    return posted, amount


def on_return(
    conn: Connection,
    program: ProgramVersion,
    purchase_external_id: str,
    returned_total: int,
    purchase_total: int,
    return_external_id: str,
    now: datetime,
    actor: str,
) -> int:
    """What a return undoes besides earning: the share of points paid on the purchase goes
    back (all of it once the purchase is returned in full), and a full return makes the
    vouchers used on it usable again where their reward says so. The points given back."""
    full = returned_total >= purchase_total
    if full:
        restore_on_return(conn, program, purchase_external_id, now)
    spent = ledger_repository.transaction_by_key(
        conn, program.program_id, f"pay:{purchase_external_id}"
    )
    if spent is None:
        return 0
    paid = -ledger_repository.member_change(conn, int(spent.id))
    due = paid if full or purchase_total <= 0 else paid * returned_total // purchase_total
    points = due - ledger_repository.refunded(conn, int(spent.id))
    if points <= 0:
        return 0
    ctx = ledger.Context(program.program_id, now, actor, program.version)
    ledger.post(
        conn,
        ctx,
        ledger.Refund(
            int(spent.id), points, f"pay-refund:{return_external_id}", "purchase returned"
        ),
    )
    return points
