"""`ledger.post_for_new_row`: the activity row and its earn written together (on
PostgreSQL by one statement), with one credit or several, and nothing when the row exists."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from ledger_shop import Shop
from sqlalchemy import func, select

from trofast.activities import repository
from trofast.activities.models import activities
from trofast.ledger import service as ledger
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers


def _post(shop: Shop, member_id: int, account_id: int, external_id: str, *credits: Any) -> Any:
    now = shop.clock.now()
    row = {
        "program_id": shop.pid,
        "external_id": external_id,
        "type": "purchase",
        "member_id": member_id,
        "occurred_at": now,
        "body": {"external_id": external_id},
        "request_hash": "h",
        "program_version": shop.program.version,
        "points": sum(c.points for c in credits),
        "result": {},
        "received_at": now,
    }
    earn = ledger.Earn(member_id, account_id, list(credits), "activity:", now)
    ctx = ledger.Context(shop.pid, now, "test", shop.program.version)
    with shop.db.write() as conn:
        new_row = ledger.NewRow(*repository.new_row(conn.dialect, row))
        return ledger.post_for_new_row(conn, ctx, earn, new_row)


def _written(shop: Shop, account_id: int) -> dict[str, Any]:
    with shop.db.read() as conn:
        headers = conn.execute(
            select(ledger_transactions.c.idempotency_key, ledger_transactions.c.activity_id)
            .where(ledger_transactions.c.program_id == shop.pid)
            .order_by(ledger_transactions.c.id)
        ).all()
        made = conn.execute(
            select(lots.c.activity_id, lots.c.rule, lots.c.original, lots.c.pending)
            .where(lots.c.account_id == account_id)
            .order_by(lots.c.id)
        ).all()
        legs = conn.execute(
            select(transfers.c.amount, transfers.c.phase)
            .join(lots, lots.c.id == transfers.c.lot_id)
            .where(lots.c.account_id == account_id)
            .order_by(transfers.c.id)
        ).all()
        counters = conn.execute(
            select(accounts.c.credits_posted, accounts.c.credits_pending).where(
                accounts.c.id == account_id
            )
        ).one()
        rows = conn.execute(
            select(func.count()).where(activities.c.program_id == shop.pid)
        ).scalar_one()
    return {
        "headers": [tuple(h) for h in headers],
        "lots": [tuple(lot) for lot in made],
        "legs": [tuple(leg) for leg in legs],
        "counters": tuple(counters),
        "activities": rows,
    }


def test_the_row_and_its_earn_go_in_together_once(shop_for: Callable[..., Shop]) -> None:
    shop = shop_for()
    member_id, account_id = shop.enrol()
    later = shop.clock.now() + timedelta(days=30)
    first = _post(shop, member_id, account_id, "one", ledger.Credit(7, "base"))
    assert first is not None
    one, posted = first
    assert (posted.points, posted.balance.available, posted.balance.pending) == (7, 7, 0)
    second = _post(
        shop,
        member_id,
        account_id,
        "two",
        ledger.Credit(5, "base"),
        ledger.Credit(3, "bonus", vests_at=later),
    )
    assert second is not None
    two, posted = second
    assert (posted.points, posted.balance.available, posted.balance.pending) == (8, 12, 3)
    assert len(posted.lot_ids) == 2
    expected = {
        "headers": [(f"activity:{one}", one), (f"activity:{two}", two)],
        "lots": [(one, "base", 7, False), (two, "base", 5, False), (two, "bonus", 3, True)],
        "legs": [(7, "single"), (5, "single"), (3, "pending")],
        "counters": (12, 3),
        "activities": 2,
    }
    assert _written(shop, account_id) == expected
    # The same external_id again: no row, no earn.
    assert _post(shop, member_id, account_id, "two", ledger.Credit(9, "base")) is None
    assert _written(shop, account_id) == expected
