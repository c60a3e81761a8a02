"""Read-only SQL over the ledger: balances, history, due lots."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, case, func, select

from trofast.activities.models import activities
from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers


def member_account(conn: Connection, member_id: int, unit: str) -> int | None:
    value = conn.execute(
        select(accounts.c.id).where(
            accounts.c.member_id == member_id, accounts.c.kind == "member", accounts.c.unit == unit
        )
    ).scalar_one_or_none()
    return None if value is None else int(value)


def account_counters(conn: Connection, account_id: int) -> AnyRow:
    return conn.execute(select(accounts).where(accounts.c.id == account_id)).one()


def lot_totals(conn: Connection, account_id: int, now: datetime) -> AnyRow:
    """Lifetime sums over a member's lots and what expires within 30/60/90 days."""

    def expiring(days: int) -> Any:
        soon = now + timedelta(days=days)
        return func.coalesce(
            func.sum(
                case(
                    (
                        (lots.c.pending.is_(False)) & (lots.c.expires_at <= soon),
                        lots.c.remaining,
                    ),
                    else_=0,
                )
            ),
            0,
        )

    return conn.execute(
        select(
            func.coalesce(func.sum(lots.c.original - lots.c.reversed), 0).label("earned"),
            func.coalesce(func.sum(lots.c.consumed), 0).label("spent"),
            func.coalesce(func.sum(lots.c.expired), 0).label("expired"),
            func.coalesce(func.sum(lots.c.reversed), 0).label("reversed"),
            expiring(30).label("expiring_30"),
            expiring(60).label("expiring_60"),
            expiring(90).label("expiring_90"),
        ).where(lots.c.account_id == account_id)
    ).one()


def history(
    conn: Connection, member_id: int, account_id: int, before_id: int, limit: int
) -> list[AnyRow]:
    """Ledger transactions touching a member, newest first, with the member's net change."""
    signed = case(
        (transfers.c.phase == "void", 0),
        (transfers.c.credit_account_id == account_id, transfers.c.amount),
        else_=-transfers.c.amount,
    )
    pending = case(
        (transfers.c.phase == "pending", transfers.c.amount),
        (transfers.c.phase.in_(("post", "void")), -transfers.c.amount),
        else_=0,
    )
    stmt = (
        select(
            ledger_transactions.c.id,
            ledger_transactions.c.kind,
            ledger_transactions.c.rule,
            ledger_transactions.c.program_version,
            ledger_transactions.c.actor,
            ledger_transactions.c.reference,
            ledger_transactions.c.reason,
            ledger_transactions.c.reverses_id,
            ledger_transactions.c.effective_at,
            ledger_transactions.c.created_at,
            activities.c.external_id.label("activity_external_id"),
            activities.c.type.label("activity_type"),
            func.coalesce(func.sum(signed), 0).label("points"),
            func.coalesce(func.sum(pending), 0).label("pending_change"),
        )
        .select_from(ledger_transactions)
        .outerjoin(transfers, transfers.c.transaction_id == ledger_transactions.c.id)
        .outerjoin(activities, activities.c.id == ledger_transactions.c.activity_id)
        .where(ledger_transactions.c.member_id == member_id)
        .group_by(ledger_transactions.c.id, activities.c.external_id, activities.c.type)
        .order_by(ledger_transactions.c.id.desc())
        .limit(limit)
    )
    if before_id:
        stmt = stmt.where(ledger_transactions.c.id < before_id)
    return list(conn.execute(stmt).all())


def due_for_vesting(conn: Connection, program_id: int, now: datetime, limit: int) -> list[int]:
    return [
        int(v)
        for v in conn.execute(
            select(lots.c.id)
            .where(
                lots.c.program_id == program_id, lots.c.pending.is_(True), lots.c.vests_at <= now
            )
            .order_by(lots.c.vests_at, lots.c.id)
            .limit(limit)
        ).scalars()
    ]


def due_for_expiry(conn: Connection, program_id: int, now: datetime, limit: int) -> list[int]:
    return [
        int(v)
        for v in conn.execute(
            select(lots.c.id)
            .where(
                lots.c.program_id == program_id,
                lots.c.remaining > 0,
                lots.c.pending.is_(False),
                lots.c.expires_at <= now,
            )
            .order_by(lots.c.expires_at, lots.c.id)
            .limit(limit)
        ).scalars()
    ]


def transaction_by_key(conn: Connection, program_id: int, key: str) -> AnyRow | None:
    """The ledger transaction posted under idempotency `key`, if any."""
    return conn.execute(
        select(ledger_transactions).where(
            ledger_transactions.c.program_id == program_id,
            ledger_transactions.c.idempotency_key == key,
        )
    ).first()


def member_change(conn: Connection, transaction_id: int) -> int:
    """What a transaction moved into (+) or out of (-) member accounts, posted legs only."""
    signed = case(
        (accounts.c.kind == "member", transfers.c.amount),
        else_=-transfers.c.amount,
    )
    value = conn.execute(
        select(func.coalesce(func.sum(signed), 0))
        .select_from(transfers)
        .join(accounts, accounts.c.id == transfers.c.credit_account_id)
        .where(
            transfers.c.transaction_id == transaction_id,
            transfers.c.phase.in_(("single", "post")),
        )
    ).scalar_one()
    return int(value)


def refunded(conn: Connection, transaction_id: int) -> int:
    """Points already refunded against a spend."""
    value = conn.execute(
        select(func.coalesce(func.sum(transfers.c.amount), 0))
        .select_from(transfers)
        .join(ledger_transactions, ledger_transactions.c.id == transfers.c.transaction_id)
        .where(
            ledger_transactions.c.reverses_id == transaction_id,
            ledger_transactions.c.kind == "refund",
        )
    ).scalar_one()
    return int(value)
