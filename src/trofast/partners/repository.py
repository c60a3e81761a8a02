"""All SQL of the partners module (the ledger tables are only read here)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.orm import aliased

from trofast.kit.orm import AnyRow
from trofast.ledger.models import accounts, ledger_transactions, lots, transfers
from trofast.members.models import members
from trofast.partners.models import partner_activities

_ACTIVITY = (
    partner_activities,
    members.c.loyalty_number,
)


def activity(conn: Connection, program_id: int, partner: str, external_id: str) -> AnyRow | None:
    return conn.execute(
        select(*_ACTIVITY)
        .join(members, members.c.id == partner_activities.c.member_id)
        .where(
            partner_activities.c.program_id == program_id,
            partner_activities.c.partner == partner,
            partner_activities.c.external_id == external_id,
        )
    ).first()


def external_id_of(conn: Connection, activity_id: int) -> str:
    return str(
        conn.execute(
            select(partner_activities.c.external_id).where(partner_activities.c.id == activity_id)
        ).scalar_one()
    )


def insert_activity(conn: Connection, values: dict[str, Any]) -> int:
    return int(
        conn.execute(
            partner_activities.insert().values(values).returning(partner_activities.c.id)
        ).scalar_one()
    )


def set_transaction(conn: Connection, activity_id: int, **values: Any) -> None:
    conn.execute(
        partner_activities.update().where(partner_activities.c.id == activity_id).values(values)
    )


def returned(conn: Connection, original_id: int, but: int) -> tuple[int, int, int]:
    """(amount, points, written-off points) of the returns of a partner purchase so far,
    other than the return `but`."""
    row = conn.execute(
        select(
            func.coalesce(func.sum(partner_activities.c.amount), 0),
            func.coalesce(func.sum(partner_activities.c.points), 0),
            func.coalesce(func.sum(partner_activities.c.written_off), 0),
        ).where(partner_activities.c.original_id == original_id, partner_activities.c.id != but)
    ).one()
    return int(row[0]), int(row[1]), int(row[2])


def lots_of_transaction(conn: Connection, transaction_id: int) -> list[AnyRow]:
    return list(
        conn.execute(
            select(lots.c.id, lots.c.expired).where(lots.c.transaction_id == transaction_id)
        ).all()
    )


def page(
    conn: Connection, program_id: int, partner: str, after_id: int, limit: int
) -> list[AnyRow]:
    """The partner's activities in the order they came, after `after_id`."""
    return list(
        conn.execute(
            select(*_ACTIVITY)
            .join(members, members.c.id == partner_activities.c.member_id)
            .where(
                partner_activities.c.program_id == program_id,
                partner_activities.c.partner == partner,
                partner_activities.c.id > after_id,
            )
            .order_by(partner_activities.c.id)
            .limit(limit)
        ).all()
    )


#: (partner, account kind, program version whose prices apply) -> (debits, credits)
Flows = dict[tuple[str, str, int | None], tuple[int, int]]


def settlement_flows(conn: Connection, program_id: int, start: datetime, end: datetime) -> Flows:
    """The debits and credits of the partner settlement accounts from the transfers made in
    [start, end), per partner, account kind and the program version priced by: the one the
    transaction was posted under, or, for a reversal (a partner return), the one of the
    transaction it reverses (points go back at the price they were issued at)."""
    header = ledger_transactions
    reversed_ = aliased(ledger_transactions)
    version = func.coalesce(reversed_.c.program_version, header.c.program_version)
    out: Flows = {}
    for side, account_column in (
        ("debit", transfers.c.debit_account_id),
        ("credit", transfers.c.credit_account_id),
    ):
        rows = conn.execute(
            select(accounts.c.partner, accounts.c.kind, version, func.sum(transfers.c.amount))
            .join(accounts, accounts.c.id == account_column)
            .join(header, header.c.id == transfers.c.transaction_id)
            .join(reversed_, reversed_.c.id == header.c.reverses_id, isouter=True)
            .where(
                transfers.c.program_id == program_id,
                accounts.c.partner.is_not(None),
                transfers.c.phase == "single",
                transfers.c.created_at >= start,
                transfers.c.created_at < end,
            )
            .group_by(accounts.c.partner, accounts.c.kind, version)
        ).all()
        for row in rows:
            key = (str(row[0]), str(row[1]), None if row[2] is None else int(row[2]))
            debits, credits = out.get(key, (0, 0))
            if side == "debit":
                debits += int(row[3])
            else:
                credits += int(row[3])
            out[key] = (debits, credits)
    return out
