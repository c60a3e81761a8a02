"""SQL for analytics: streams of stored activities and ledger totals per month."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select

from trofast.activities.models import activities
from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts, ledger_transactions, transfers
from trofast.members.models import members


def activity_stream(
    conn: Connection, program_id: int, start: datetime, end: datetime, chunk: int = 20_000
) -> Iterator[AnyRow]:
    """Activities with occurred_at in [start, end), oldest first, fetched in chunks."""
    stmt = (
        select(
            activities.c.id,
            activities.c.type,
            activities.c.member_id,
            activities.c.occurred_at,
            activities.c.amount,
            activities.c.store,
            activities.c.channel,
            activities.c.event_type,
            activities.c.original_id,
            activities.c.body,
            activities.c.points,
        )
        .where(
            activities.c.program_id == program_id,
            activities.c.occurred_at >= start,
            activities.c.occurred_at < end,
        )
        .order_by(activities.c.occurred_at, activities.c.id)
        .execution_options(yield_per=chunk)
    )
    yield from conn.execute(stmt)


def member_rows(conn: Connection, program_id: int) -> dict[int, Any]:
    rows = conn.execute(
        select(
            members.c.id,
            members.c.status,
            members.c.birth_date,
            members.c.enrolled_at,
            members.c.channel,
        ).where(members.c.program_id == program_id)
    ).all()
    return {int(r.id): r for r in rows}


def member_debits(
    conn: Connection, program_id: int, start: datetime, end: datetime
) -> list[AnyRow]:
    """Points leaving member accounts (spent, expired, taken back), with their time."""
    return list(
        conn.execute(
            select(
                ledger_transactions.c.kind, ledger_transactions.c.effective_at, transfers.c.amount
            )
            .join(transfers, transfers.c.transaction_id == ledger_transactions.c.id)
            .join(accounts, accounts.c.id == transfers.c.debit_account_id)
            .where(
                ledger_transactions.c.program_id == program_id,
                accounts.c.kind == "member",
                accounts.c.unit == "points",
                transfers.c.phase.in_(("single", "post")),
                ledger_transactions.c.effective_at >= start,
                ledger_transactions.c.effective_at < end,
                ledger_transactions.c.kind.in_(("spend", "expire", "adjust")),
            )
        ).all()
    )
