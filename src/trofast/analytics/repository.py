"""SQL for analytics: streams of stored activities and ledger totals per month."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    DateTime,
    String,
    Text,
    case,
    cast,
    null,
    select,
    type_coerce,
)

from trofast.activities.models import activities
from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts, ledger_transactions, transfers
from trofast.members.models import members


def activity_stream(
    conn: Connection,
    program_id: int,
    start: datetime,
    end: datetime,
    *,
    bodies: tuple[str, ...] = ("purchase", "return", "event"),
    chunk: int = 20_000,
) -> Iterable[AnyRow]:
    """Activities with occurred_at in [start, end), oldest first, fetched in chunks.

    Built for replays of millions of rows, so values come as the driver gives them, without
    the columns' own conversions: `occurred_at` is an aware datetime on PostgreSQL and ISO
    text with its UTC offset on SQLite (`datetime.fromisoformat` reads it ten times faster
    than a naive datetime gets its time zone); `body` is JSON text, and only for the activity
    types in `bodies` (else NULL: a body is most of a row, and decoding it most of the cost of
    reading one).
    """
    occurred_at: ColumnElement[Any] = type_coerce(activities.c.occurred_at, DateTime())
    if conn.dialect.name == "sqlite":  # stored as naive UTC text
        occurred_at = type_coerce(activities.c.occurred_at, String) + "+00:00"
    body = (
        case((activities.c.type.in_(bodies), cast(activities.c.body, Text)), else_=null())
        if bodies
        else null()
    )
    stmt = (
        select(
            activities.c.id,
            activities.c.type,
            activities.c.member_id,
            occurred_at.label("occurred_at"),
            activities.c.amount,
            activities.c.currency,
            activities.c.store,
            activities.c.channel,
            activities.c.event_type,
            activities.c.original_id,
            body.label("body"),
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
    return conn.execute(stmt)


def returned_purchases(
    conn: Connection, program_id: int, start: datetime, end: datetime
) -> set[int]:
    """Ids of the activities that returns with occurred_at in [start, end) take back from."""
    return set(
        conn.execute(
            select(activities.c.original_id)
            .where(
                activities.c.program_id == program_id,
                activities.c.type == "return",
                activities.c.original_id.is_not(None),
                activities.c.occurred_at >= start,
                activities.c.occurred_at < end,
            )
            .distinct()
        ).scalars()
    )


def member_rows(conn: Connection, program_id: int) -> dict[int, Any]:
    rows = conn.execute(
        select(
            members.c.id,
            members.c.status,
            members.c.birth_date,
            members.c.enrolled_at,
            members.c.channel,
            members.c.tags,
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
