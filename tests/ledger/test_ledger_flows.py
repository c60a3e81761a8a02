"""Ledger flows with exact numbers, through the services, on SQLite and PostgreSQL.

Program default: 1 point per full 10.00 SEK (1000 minor units), starting 2026-01-15 10:00 UTC.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
from ledger_shop import Shop, figures
from sqlalchemy import select, text, update
from typer.testing import CliRunner

from trofast.cli import app as cli
from trofast.kit.db import Database
from trofast.kit.errors import Problem
from trofast.ledger import service as ledger
from trofast.ledger.models import accounts, ledger_transactions, transfers
from trofast.worker import jobs
from trofast.worker.jobs import JobReport

# -- earning with vesting ---------------------------------------------------------------------


def test_earn_with_vesting(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(vesting_days=14)
    anna = shop.enrol()
    result = shop.purchase(anna[0], "r1", 25_950)
    assert result.points == 25
    assert (result.balance.available, result.balance.pending) == (0, 25)
    assert figures(shop.balance(anna)) == (0, 25, 0)
    (lot,) = shop.lots(anna)
    assert lot.pending and lot.vests_at == datetime(2026, 1, 29, 10, tzinfo=UTC)

    # Pending points are visible but not spendable.
    with pytest.raises(Problem) as caught:
        shop.spend(anna, 1, "o1")
    assert (caught.value.status, caught.value.code) == (422, "insufficient_points")
    assert figures(shop.balance(anna)) == (0, 25, 0)

    # A second before the vesting time nothing happens.
    shop.clock.advance(timedelta(days=14, seconds=-1))
    assert shop.run_jobs() == JobReport(vested=0, expired=0)
    assert figures(shop.balance(anna)) == (0, 25, 0)

    shop.clock.advance(timedelta(seconds=1))
    assert shop.run_jobs() == JobReport(vested=1, expired=0)
    assert figures(shop.balance(anna)) == (25, 0, 0)
    assert shop.balance(anna)["lifetime_earned"] == 25
    before = shop.transaction_count()

    # The job run again changes nothing.
    assert shop.run_jobs() == JobReport(vested=0, expired=0)
    shop.clock.advance(timedelta(days=3))
    assert shop.run_jobs() == JobReport(vested=0, expired=0)
    assert shop.transaction_count() == before
    assert figures(shop.balance(anna)) == (25, 0, 0)

    assert shop.spend(anna, 25, "o2").balance == ledger.Balance(0, 0, 0)
    assert shop.audit() == []


def test_vesting_posts_the_pending_transfer_once(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(vesting_days=1)
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 5_000)
    shop.clock.advance(timedelta(days=1))
    shop.run_jobs()
    shop.run_jobs()
    (lot,) = shop.lots(anna)
    with shop.db.read() as conn:
        legs = conn.execute(
            select(transfers.c.phase, transfers.c.amount)
            .where(transfers.c.lot_id == lot.id)
            .order_by(transfers.c.id)
        ).all()
    assert [(leg.phase, leg.amount) for leg in legs] == [("pending", 5), ("post", 5)]
    assert not lot.pending and lot.remaining == 5
    assert shop.audit() == []


def test_the_unconfined_job_vests_and_expires_this_program_too(
    shop_for: Callable[..., Shop],
) -> None:
    """The other tests confine `run_due` to their program; here it visits every program."""
    shop = shop_for(vesting_days=2, expiry={"kind": "after_months", "months": 1})
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 9_000)
    shop.clock.advance(timedelta(days=2))
    assert jobs.run_due(shop.db, shop.clock).vested >= 1
    assert figures(shop.balance(anna)) == (9, 0, 0)
    shop.clock.set(datetime(2026, 2, 15, 10, tzinfo=UTC))
    assert jobs.run_due(shop.db, shop.clock).expired >= 1
    assert figures(shop.balance(anna)) == (0, 0, 0)
    assert shop.balance(anna)["lifetime_expired"] == 9
    assert shop.audit() == []


# -- expiry -----------------------------------------------------------------------------------


def test_expiry_moves_the_remainder_to_breakage(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(expiry={"kind": "after_months", "months": 2})
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 25_000)
    (lot,) = shop.lots(anna)
    assert lot.expires_at == datetime(2026, 3, 15, 10, tzinfo=UTC)
    shop.spend(anna, 5, "o1")

    shop.clock.set(datetime(2026, 3, 1, tzinfo=UTC))
    assert shop.balance(anna)["expiring_30_days"] == 20
    shop.clock.set(datetime(2026, 3, 15, 9, 59, 59, tzinfo=UTC))
    assert shop.run_jobs() == JobReport(vested=0, expired=0)
    assert figures(shop.balance(anna)) == (20, 0, 0)

    shop.clock.set(datetime(2026, 3, 15, 10, tzinfo=UTC))
    assert shop.run_jobs() == JobReport(vested=0, expired=1)
    balance = shop.balance(anna)
    assert figures(balance) == (0, 0, 0)
    assert (balance["lifetime_earned"], balance["lifetime_spent"], balance["lifetime_expired"]) == (
        25,
        5,
        20,
    )
    (lot,) = shop.lots(anna)
    assert (lot.remaining, lot.consumed, lot.expired) == (0, 5, 20)
    assert shop.system() == {
        "issuance": -25,
        "redemption": 5,
        "breakage": 20,
        "adjustment": 0,
        "transfer": 0,
    }

    before = shop.transaction_count()
    assert shop.run_jobs() == JobReport(vested=0, expired=0)
    shop.clock.advance(timedelta(days=400))
    assert shop.run_jobs() == JobReport(vested=0, expired=0)
    assert shop.transaction_count() == before
    assert shop.system()["breakage"] == 20
    assert shop.audit() == []


def test_expiry_date_clamps_to_the_end_of_a_short_month(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(expiry={"kind": "after_months", "months": 1})
    shop.clock.set(datetime(2026, 1, 31, 12, tzinfo=UTC))
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 3_000)
    (lot,) = shop.lots(anna)
    assert lot.expires_at == datetime(2026, 2, 28, 12, tzinfo=UTC)


def test_end_of_year_expiry_counts_the_year_in_the_program_zone(
    shop_for: Callable[..., Shop],
) -> None:
    shop = shop_for(expiry={"kind": "end_of_year"}, timezone="Europe/Stockholm")
    shop.clock.set(datetime(2026, 12, 31, 23, 30, tzinfo=UTC))  # 00:30 on 1 Jan 2027 local
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 3_000)
    (lot,) = shop.lots(anna)
    assert lot.expires_at == datetime(2027, 12, 31, 23, tzinfo=UTC)  # 2028-01-01 00:00 local


# -- spending order ---------------------------------------------------------------------------


def test_spend_takes_soonest_expiring_first_and_never_expiring_last(
    shop_for: Callable[..., Shop],
) -> None:
    shop = shop_for(expiry={"kind": "after_months", "months": 3}, timezone="UTC")
    anna = shop.enrol()
    shop.adjust(anna, 7, "welcome gift", "g1")  # the oldest lot, but it never expires
    shop.purchase(anna[0], "a", 20_000)  # 20, expires 2026-04-15 10:00
    shop.purchase(anna[0], "b", 10_000)  # 10, expires at the same instant: a goes first
    shop.clock.set(datetime(2026, 2, 1, 8, tzinfo=UTC))
    shop.purchase(anna[0], "c", 5_000)  # 5, expires 2026-05-01 08:00
    gift, a, b, c = shop.lots(anna)
    assert gift.expires_at is None
    assert a.expires_at == b.expires_at == datetime(2026, 4, 15, 10, tzinfo=UTC)
    assert c.expires_at == datetime(2026, 5, 1, 8, tzinfo=UTC)

    posted = shop.spend(anna, 25, "o1")
    assert (posted.points, posted.balance.available) == (-25, 17)
    assert [lot.remaining for lot in shop.lots(anna)] == [7, 0, 5, 5]
    shop.spend(anna, 8, "o2")
    assert [lot.remaining for lot in shop.lots(anna)] == [7, 0, 0, 2]
    shop.spend(anna, 4, "o3")
    assert [lot.remaining for lot in shop.lots(anna)] == [5, 0, 0, 0]
    assert [lot.consumed for lot in shop.lots(anna)] == [2, 20, 10, 5]
    assert shop.audit() == []


def test_spend_prefers_the_lot_expiring_soonest_over_the_oldest(
    shop_for: Callable[..., Shop],
) -> None:
    shop = shop_for(expiry={"kind": "after_months", "months": 12})
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 10_000)  # expires 2027-01-15
    shop.adjust(
        anna,
        10,
        "compensation",
        "a1",  # newer, expires sooner
        expires_at=datetime(2026, 6, 1, tzinfo=UTC),
    )
    purchase_lot, adjustment_lot = shop.lots(anna)
    shop.spend(anna, 12, "o1")
    purchase_lot, adjustment_lot = shop.lots(anna)
    assert (adjustment_lot.remaining, purchase_lot.remaining) == (0, 8)
    assert shop.audit() == []


# -- returns ----------------------------------------------------------------------------------


def test_return_before_vesting_voids_and_repends(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(vesting_days=14)
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 25_000)
    result = shop.ret("ret1", "r1", 10_000)
    assert (result.points, result.uncollected) == (-10, 0)
    assert figures(shop.balance(anna)) == (0, 15, 0)
    (lot,) = shop.lots(anna)
    assert (lot.pending, lot.remaining, lot.reversed) == (True, 15, 10)
    with shop.db.read() as conn:
        legs = conn.execute(
            select(transfers.c.phase, transfers.c.amount)
            .where(transfers.c.lot_id == lot.id)
            .order_by(transfers.c.id)
        ).all()
    assert [(leg.phase, leg.amount) for leg in legs] == [
        ("pending", 25),
        ("void", 25),
        ("pending", 15),
    ]
    assert shop.audit() == []

    # Another 500 back keeps floor(14500 / 1000) = 14 points: one more point goes.
    assert shop.ret("ret2", "r1", 500).points == -1
    assert figures(shop.balance(anna)) == (0, 14, 0)

    shop.clock.advance(timedelta(days=14))
    shop.run_jobs()
    assert figures(shop.balance(anna)) == (14, 0, 0)
    assert shop.balance(anna)["lifetime_earned"] == 14
    assert shop.audit() == []


def test_full_return_before_vesting_leaves_nothing_to_vest(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(vesting_days=14)
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 25_000)
    assert shop.ret("ret1", "r1").points == -25
    assert figures(shop.balance(anna)) == (0, 0, 0)
    assert shop.audit() == []
    shop.clock.advance(timedelta(days=15))
    shop.run_jobs()
    (lot,) = shop.lots(anna)
    assert (lot.pending, lot.remaining, lot.reversed) == (False, 0, 25)
    assert figures(shop.balance(anna)) == (0, 0, 0)
    assert shop.audit() == []


def test_return_after_vesting_takes_from_the_purchases_own_lot_first(
    shop_for: Callable[..., Shop],
) -> None:
    shop = shop_for(expiry={"kind": "after_months", "months": 3})
    anna = shop.enrol()
    shop.purchase(anna[0], "a", 10_000)  # lot A: 10, expires 2026-04-15
    shop.clock.advance(timedelta(days=31))
    shop.purchase(anna[0], "b", 20_000)  # lot B: 20, expires 2026-05-15
    result = shop.ret("ret-b", "b", 5_000)
    assert result.points == -5
    lot_a, lot_b = shop.lots(anna)
    # B's own lot pays, although A expires sooner (a spend would take A first).
    assert (lot_a.remaining, lot_b.remaining, lot_b.reversed) == (10, 15, 5)
    assert figures(shop.balance(anna)) == (25, 0, 0)

    shop.spend(anna, 12, "o1")  # A (10) then B (2)
    lot_a, lot_b = shop.lots(anna)
    assert (lot_a.remaining, lot_b.remaining) == (0, 13)
    # The rest of A comes back: A's own lot is empty, so other lots pay.
    result = shop.ret("ret-a", "a")
    assert (result.points, result.uncollected) == (-10, 0)
    lot_a, lot_b = shop.lots(anna)
    assert (lot_a.remaining, lot_b.remaining, lot_b.reversed) == (0, 3, 15)
    assert figures(shop.balance(anna)) == (3, 0, 0)
    assert shop.audit() == []


def test_return_after_the_points_were_spent_under_forbid(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(negative_balance="forbid")
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 20_000)
    shop.spend(anna, 15, "o1")
    result = shop.ret("ret1", "r1")
    assert (result.points, result.uncollected) == (-20, 15)
    assert figures(shop.balance(anna)) == (0, 0, 0)
    # The next earn is the member's own.
    shop.purchase(anna[0], "r2", 4_000)
    assert figures(shop.balance(anna)) == (4, 0, 0)
    assert shop.system()["issuance"] == -(20 - 5 + 4)
    assert shop.audit() == []


def test_return_after_the_points_were_spent_under_allow(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(negative_balance="allow")
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 20_000)
    shop.spend(anna, 15, "o1")
    result = shop.ret("ret1", "r1")
    assert (result.points, result.uncollected) == (-20, 0)
    assert figures(shop.balance(anna)) == (-15, 0, 15)
    with pytest.raises(Problem) as caught:
        shop.spend(anna, 1, "o2")
    assert caught.value.code == "insufficient_points"
    assert figures(shop.balance(anna)) == (-15, 0, 15)

    # The next earn pays the debt first.
    shop.purchase(anna[0], "r2", 10_000)
    assert figures(shop.balance(anna)) == (-5, 0, 5)
    posted = shop.adjust(anna, 8, "goodwill", "a1")
    assert posted.balance == ledger.Balance(3, 0, 0)
    assert figures(shop.balance(anna)) == (3, 0, 0)
    _, r2_lot, adj_lot = shop.lots(anna)
    assert (r2_lot.remaining, r2_lot.reversed) == (0, 10)
    assert (adj_lot.remaining, adj_lot.reversed) == (3, 5)
    assert shop.audit() == []


def test_return_after_the_points_were_spent_under_deduct(shop_for: Callable[..., Shop]) -> None:
    """`deduct`: the return takes what is left of the purchase's own points; the rest is
    withheld from the next earnings, and the member's other points stay spendable."""
    shop = shop_for(negative_balance="deduct")
    anna = shop.enrol()
    shop.adjust(anna, 30, "earlier points", "a0")
    shop.purchase(anna[0], "r1", 20_000)  # 20 points, a lot of their own
    shop.spend(anna, 35, "o1")  # the 30 earlier points go first (never-expiring last)...
    result = shop.ret("ret1", "r1")  # ...so 5 of r1's 20 are gone; 15 are left
    assert (result.points, result.uncollected, result.withheld) == (-20, 0, 5)
    balance = shop.balance(anna)
    assert (figures(balance), balance["withheld"]) == ((0, 0, 0), 5)

    shop.adjust(anna, 12, "more earlier points", "a1")  # also pays what is withheld
    balance = shop.balance(anna)
    assert (figures(balance), balance["withheld"]) == ((7, 0, 0), 0)
    assert shop.audit() == []


def test_deduct_leaves_the_members_other_points_alone(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(negative_balance="deduct")
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 20_000)  # 20 points
    shop.spend(anna, 20, "o1")
    shop.adjust(anna, 50, "points from elsewhere", "a1")
    result = shop.ret("ret1", "r1")
    assert (result.points, result.withheld) == (-20, 20)
    balance = shop.balance(anna)
    assert (balance["available"], balance["withheld"]) == (50, 20)
    shop.spend(anna, 50, "o2")  # still all spendable
    shop.purchase(anna[0], "r2", 30_000)  # 30 points: 20 withheld, 10 to the member
    balance = shop.balance(anna)
    assert (balance["available"], balance["withheld"]) == (10, 0)
    assert shop.audit() == []


def test_debt_is_paid_when_pending_points_vest(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for(negative_balance="allow", vesting_days=7)
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 20_000)
    shop.clock.advance(timedelta(days=7))
    shop.run_jobs()
    shop.spend(anna, 20, "o1")
    shop.purchase(anna[0], "r2", 12_000)
    assert shop.ret("ret1", "r1", 20_000).points == -20
    # r2's points are pending: they are not taken; the member owes 20.
    assert figures(shop.balance(anna)) == (-20, 12, 20)
    shop.clock.advance(timedelta(days=7))
    shop.run_jobs()
    assert figures(shop.balance(anna)) == (-8, 0, 8)
    assert shop.audit() == []


def test_return_limits(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 20_000)
    with pytest.raises(Problem) as caught:
        shop.ret("ret1", "r1", 20_001)
    assert (caught.value.status, caught.value.code) == (422, "return_exceeds_purchase")
    shop.ret("ret1", "r1", 15_000)
    with pytest.raises(Problem) as caught:
        shop.ret("ret2", "r1", 5_001)
    assert caught.value.code == "return_exceeds_purchase"
    assert shop.ret("ret2", "r1").points == -5
    with pytest.raises(Problem) as caught:
        shop.ret("ret3", "r1")
    assert (caught.value.status, caught.value.code) == (422, "nothing_to_return")
    assert figures(shop.balance(anna)) == (0, 0, 0)
    assert shop.audit() == []


def test_a_resubmitted_activity_is_a_duplicate(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    first = shop.purchase(anna[0], "r1", 20_000)
    again = shop.purchase(anna[0], "r1", 20_000)
    assert again.replayed and again.points == first.points == 20
    assert figures(shop.balance(anna)) == (20, 0, 0)
    with pytest.raises(Problem) as caught:
        shop.purchase(anna[0], "r1", 30_000)
    assert (caught.value.status, caught.value.code) == (409, "external_id_reused")
    shop.ret("ret1", "r1", 5_000)
    assert shop.ret("ret1", "r1", 5_000).replayed
    assert figures(shop.balance(anna)) == (15, 0, 0)
    assert shop.audit() == []


# -- adjustments ------------------------------------------------------------------------------


def test_adjustments_with_a_reason(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    plus = shop.adjust(anna, 50, "Coffee machine broke", "a1")
    assert (plus.points, plus.balance) == (50, ledger.Balance(50, 0, 0))
    minus = shop.adjust(anna, -20, "Double-counted visit", "a2")
    assert (minus.points, minus.balance) == (-20, ledger.Balance(30, 0, 0))
    with pytest.raises(Problem) as caught:
        shop.adjust(anna, -31, "Too much", "a3")
    assert (caught.value.status, caught.value.code) == (422, "insufficient_points")
    assert figures(shop.balance(anna)) == (30, 0, 0)

    # The same reference replays; with other points it is a conflict.
    again = shop.adjust(anna, -20, "Double-counted visit", "a2")
    assert again.replayed and again.points == -20
    with pytest.raises(Problem) as caught:
        shop.adjust(anna, -21, "Double-counted visit", "a2")
    assert caught.value.status == 409
    assert figures(shop.balance(anna)) == (30, 0, 0)

    with shop.db.read() as conn:
        rows = conn.execute(
            select(ledger_transactions.c.kind, ledger_transactions.c.reason)
            .where(ledger_transactions.c.member_id == anna[0])
            .order_by(ledger_transactions.c.id)
        ).all()
    assert [tuple(r) for r in rows] == [
        ("adjust", "Coffee machine broke"),
        ("adjust", "Double-counted visit"),
    ]
    assert shop.system()["adjustment"] == -30
    assert shop.audit() == []


def test_spend_is_idempotent_by_reference(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    anna = shop.enrol()
    shop.purchase(anna[0], "r1", 20_000)
    assert shop.spend(anna, 5, "o1").balance.available == 15
    again = shop.spend(anna, 5, "o1")
    assert again.replayed and again.points == -5 and again.balance.available == 15
    with pytest.raises(Problem) as caught:
        shop.spend(anna, 6, "o1")
    assert (caught.value.status, caught.value.code) == (409, "reference_reused")
    assert figures(shop.balance(anna)) == (15, 0, 0)
    assert shop.audit() == []


# -- `trofast ledger audit` -------------------------------------------------------------------


def test_cli_audit_passes_on_a_sound_ledger_and_fails_on_a_corrupt_one(
    db: Database, shop_for: Callable[..., Shop]
) -> None:
    shop = shop_for(vesting_days=3, expiry={"kind": "after_months", "months": 1})
    anna, bo = shop.enrol(), shop.enrol()
    shop.purchase(anna[0], "r1", 30_000)
    shop.purchase(bo[0], "r2", 12_000)
    shop.ret("ret1", "r1", 10_000)
    shop.clock.advance(timedelta(days=3))
    shop.run_jobs()
    shop.spend(anna, 5, "o1")
    shop.adjust(bo, 3, "goodwill", "a1")
    args = ["ledger", "audit", "--program", shop.program.spec.key, "--db", db.url]
    runner = CliRunner()

    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "sound" in result.output

    with db.write() as conn:  # a counter no transfer explains
        conn.execute(
            update(accounts)
            .where(accounts.c.id == anna[1])
            .values(credits_posted=accounts.c.credits_posted + 1)
        )
    try:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert "credits_posted" in result.output
    finally:
        with db.write() as conn:
            conn.execute(
                text("UPDATE accounts SET credits_posted = credits_posted - 1 WHERE id = :id"),
                {"id": anna[1]},
            )
    assert runner.invoke(cli, args).exit_code == 0

    # A lot bucket that does not match its transfers is found too.
    (lot,) = shop.lots(bo)[:1]
    with db.write() as conn:
        conn.execute(
            text(
                "UPDATE lots SET remaining = remaining - 1, consumed = consumed + 1 WHERE id = :id"
            ),
            {"id": lot.id},
        )
    try:
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, result.output
        assert f"lot {lot.id}" in result.output
    finally:
        with db.write() as conn:
            conn.execute(
                text(
                    "UPDATE lots SET remaining = remaining + 1, consumed = consumed - 1 "
                    "WHERE id = :id"
                ),
                {"id": lot.id},
            )
    assert shop.audit() == []
