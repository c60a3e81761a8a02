"""Holds (two-phase redemption), refunds and member-to-member transfers, with exact numbers,
on SQLite and PostgreSQL. The audit is clean after every flow."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from ledger_shop import Shop, figures

from trofast.kit.errors import Problem
from trofast.kit.idempotency import request_hash
from trofast.ledger import repository
from trofast.ledger import service as ledger

Member = tuple[int, int]


def hold(shop: Shop, member: Member, points: int, reference: str) -> ledger.Posted:
    return shop._post(
        ledger.Hold(
            member[0],
            member[1],
            points,
            reference,
            f"hold:{reference}",
            request_hash(member[0], points, reference),
        )
    )


def settle(shop: Shop, hold_id: int) -> ledger.Posted:
    return shop._post(ledger.Settle(hold_id, f"settle:{hold_id}"))


def release(shop: Shop, hold_id: int) -> ledger.Posted:
    return shop._post(ledger.Release(hold_id, f"release:{hold_id}"))


def refund(shop: Shop, spent_id: int, points: int, key: str) -> ledger.Posted:
    return shop._post(ledger.Refund(spent_id, points, key, "test"))


def move(shop: Shop, sender: Member, recipient: Member, points: int, ref: str) -> ledger.Posted:
    return shop._post(
        ledger.Move(
            sender[0],
            sender[1],
            recipient[0],
            recipient[1],
            points,
            ref,
            f"transfer:{ref}",
            request_hash(sender[0], recipient[0], points),
        )
    )


def two_lots(shop: Shop, member: Member) -> None:
    """30 points expiring 2026-03-01 and 50 expiring 2026-06-01."""
    shop.adjust(member, 50, "late lot", "late", datetime(2026, 6, 1, tzinfo=UTC))
    shop.adjust(member, 30, "early lot", "early", datetime(2026, 3, 1, tzinfo=UTC))


def test_a_hold_reserves_and_settling_spends(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    two_lots(shop, anna)
    held = hold(shop, anna, 40, "voucher-1")
    assert (held.points, held.balance.available) == (-40, 40)
    early, late = sorted(shop.lots(anna), key=lambda lot: lot.expires_at)
    assert (early.remaining, early.held, late.remaining, late.held) == (0, 30, 40, 10)
    assert shop.audit() == []
    # Held points cannot be spent twice.
    with pytest.raises(Problem) as caught:
        shop.spend(anna, 41, "too-much")
    assert caught.value.code == "insufficient_points"

    settled = settle(shop, held.transaction_id)
    assert (settled.points, settled.balance.available) == (-40, 40)
    early, late = sorted(shop.lots(anna), key=lambda lot: lot.expires_at)
    assert (early.held, early.consumed, late.held, late.consumed) == (0, 30, 0, 10)
    assert shop.balance(anna)["lifetime_spent"] == 40
    assert shop.system()["redemption"] == 40
    assert shop.audit() == []
    # Settling again replays; releasing a settled hold is a conflict.
    assert settle(shop, held.transaction_id).replayed
    with pytest.raises(Problem) as caught:
        release(shop, held.transaction_id)
    assert (caught.value.status, caught.value.code) == (409, "hold_resolved")


def test_releasing_a_hold_gives_the_points_back_to_their_lots(
    shop_for: Callable[..., Shop],
) -> None:
    shop = shop_for()
    anna = shop.enrol()
    two_lots(shop, anna)
    held = hold(shop, anna, 40, "voucher-1")
    released = release(shop, held.transaction_id)
    assert (released.points, released.balance.available) == (0, 80)
    assert [(lot.remaining, lot.held) for lot in shop.lots(anna)] == [(50, 0), (30, 0)]
    assert shop.system()["redemption"] == 0
    assert shop.audit() == []


def test_points_released_after_their_expiry_expire_at_once(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    two_lots(shop, anna)
    held = hold(shop, anna, 40, "voucher-1")
    shop.clock.set(datetime(2026, 3, 2, tzinfo=UTC))
    shop.run_jobs()  # nothing of the early lot is left to expire: all of it is held
    released = release(shop, held.transaction_id)
    assert released.balance.available == 50
    early = min(shop.lots(anna), key=lambda lot: lot.expires_at)
    assert (early.remaining, early.expired) == (0, 30)
    assert shop.balance(anna)["lifetime_expired"] == 30
    assert shop.audit() == []


def test_refunds_give_points_back_last_taken_first(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    two_lots(shop, anna)
    spent = shop.spend(anna, 40, "pay-r1")  # 30 from the early lot, 10 from the late one
    first = refund(shop, spent.transaction_id, 15, "refund-1")
    assert (first.points, first.balance.available) == (15, 55)
    early, late = sorted(shop.lots(anna), key=lambda lot: lot.expires_at)
    assert (early.remaining, early.consumed, late.remaining, late.consumed) == (5, 25, 50, 0)
    assert refund(shop, spent.transaction_id, 15, "refund-1").replayed
    with pytest.raises(Problem) as caught:
        refund(shop, spent.transaction_id, 26, "refund-2")
    assert (caught.value.status, caught.value.code) == (409, "refund_too_large")
    assert caught.value.body()["refundable"] == 25
    refund(shop, spent.transaction_id, 25, "refund-2")
    assert figures(shop.balance(anna)) == (80, 0, 0)
    assert shop.balance(anna)["lifetime_spent"] == 0
    assert shop.system()["redemption"] == 0
    assert shop.audit() == []


def test_a_refund_into_an_expired_lot_expires_again(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    two_lots(shop, anna)
    spent = shop.spend(anna, 40, "pay-r1")
    shop.clock.set(datetime(2026, 4, 1, tzinfo=UTC))
    posted = refund(shop, spent.transaction_id, 40, "refund-all")
    assert posted.balance.available == 50  # the late lot's 10 are back; the early 30 expired
    early = min(shop.lots(anna), key=lambda lot: lot.expires_at)
    assert (early.remaining, early.consumed, early.expired) == (0, 0, 30)
    assert shop.system()["breakage"] == 30
    assert shop.audit() == []


def test_a_settled_hold_can_be_refunded(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    two_lots(shop, anna)
    held = hold(shop, anna, 40, "voucher-1")
    settled = settle(shop, held.transaction_id)
    refund(shop, settled.transaction_id, 40, "cancel-voucher-1")
    assert figures(shop.balance(anna)) == (80, 0, 0)
    assert shop.audit() == []


def test_a_transfer_moves_the_soonest_expiring_points_and_keeps_their_expiry(
    shop_for: Callable[..., Shop],
) -> None:
    shop = shop_for()
    anna, bo = shop.enrol(), shop.enrol()
    two_lots(shop, anna)
    sent = move(shop, anna, bo, 40, "gift-1")
    assert (sent.points, sent.balance.available) == (-40, 40)
    assert figures(shop.balance(bo)) == (40, 0, 0)
    received = sorted((lot.expires_at, lot.original, lot.rule) for lot in shop.lots(bo))
    assert received == [
        (datetime(2026, 3, 1, tzinfo=UTC), 30, "transfer"),
        (datetime(2026, 6, 1, tzinfo=UTC), 10, "transfer"),
    ]
    assert shop.system()["transfer"] == 0
    assert shop.audit() == []
    # Each member sees their side in their history.
    with shop.db.read() as conn:
        mine = repository.history(conn, anna[0], anna[1], 0, 10)
        theirs = repository.history(conn, bo[0], bo[1], 0, 10)
    assert (mine[0].kind, int(mine[0].points)) == ("transfer_out", -40)
    assert (theirs[0].kind, int(theirs[0].points)) == ("transfer_in", 40)
    # A resubmission replays; asking more than is there changes nothing.
    assert move(shop, anna, bo, 40, "gift-1").replayed
    with pytest.raises(Problem) as caught:
        move(shop, anna, bo, 41, "gift-2")
    assert caught.value.code == "insufficient_points"
    assert figures(shop.balance(anna)) == (40, 0, 0)
    # The received points expire on the sender's dates.
    shop.clock.set(datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC))
    shop.run_jobs()
    assert figures(shop.balance(bo)) == (10, 0, 0)
    assert shop.audit() == []


def test_a_transfer_pays_the_recipients_debt_first(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(negative_balance="allow")
    anna, bo = shop.enrol(), shop.enrol()
    shop.purchase(bo[0], "r1", 10_000)  # 10 points
    shop.spend(bo, 10, "coffee")
    shop.ret("ret-1", "r1")  # 10 points taken back, all spent: a debt of 10
    assert figures(shop.balance(bo)) == (-10, 0, 10)
    two_lots(shop, anna)
    move(shop, anna, bo, 25, "help")
    assert figures(shop.balance(bo)) == (15, 0, 0)
    assert shop.audit() == []
