"""All SQL of the memberships module."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trofast.kit.orm import AnyRow
from trofast.memberships.models import membership_history, memberships


def get(conn: Connection, program_id: int, member_id: int, *, lock: bool = False) -> AnyRow | None:
    stmt = select(memberships).where(
        memberships.c.program_id == program_id, memberships.c.member_id == member_id
    )
    return conn.execute(stmt.with_for_update() if lock else stmt).first()


def running_plans(
    conn: Connection, program_id: int, member_ids: Sequence[int], now: datetime
) -> dict[int, str]:
    """The plan of each of `member_ids` whose membership runs at `now`."""
    m = memberships.c
    rows = conn.execute(
        select(m.member_id, m.plan).where(
            m.program_id == program_id, m.member_id.in_(member_ids), m.ends_at > now
        )
    ).all()
    return {int(r.member_id): str(r.plan) for r in rows}


def create(conn: Connection, values: dict[str, Any]) -> tuple[AnyRow, bool]:
    """Insert the member's row unless another transaction just did; (the row, locked;
    whether this call inserted it)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    inserted = conn.execute(
        dialect_insert(memberships)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["program_id", "member_id"])
        .returning(memberships.c.id)
    ).first()
    row = get(conn, values["program_id"], values["member_id"], lock=True)
    assert row is not None
    return row, inserted is not None


def update_row(conn: Connection, row_id: int, **values: Any) -> None:
    conn.execute(update(memberships).where(memberships.c.id == row_id).values(**values))


def reference_owner(conn: Connection, program_id: int, reference: str) -> int | None:
    """The member whose payment had `reference`, if one had."""
    h = membership_history.c
    stmt = select(h.member_id).where(h.program_id == program_id, h.reference == reference)
    owner = conn.execute(stmt).scalar()
    return None if owner is None else int(owner)


def add_history(conn: Connection, values: dict[str, Any]) -> int:
    result = conn.execute(membership_history.insert().values(**values))
    assert result.inserted_primary_key is not None
    return int(result.inserted_primary_key[0])


def history(conn: Connection, program_id: int, member_id: int, limit: int) -> list[AnyRow]:
    h = membership_history.c
    return list(
        conn.execute(
            select(membership_history)
            .where(h.program_id == program_id, h.member_id == member_id)
            .order_by(h.id.desc())
            .limit(limit)
        ).all()
    )


def any_due(conn: Connection, program_id: int, now: datetime) -> bool:
    m = memberships.c
    stmt = select(m.id).where(m.program_id == program_id, m.ends_at <= now).limit(1)
    return conn.execute(stmt).first() is not None


def next_due(conn: Connection, program_id: int, now: datetime, limit: int) -> list[AnyRow]:
    """Up to `limit` memberships due to lapse at `now`, soonest first, locked (FOR UPDATE on
    PostgreSQL) so a payment arriving meanwhile waits; lapsing takes them out of this set."""
    m = memberships.c
    stmt = (
        select(memberships)
        .where(m.program_id == program_id, m.ends_at <= now)
        .order_by(m.ends_at, m.id)
        .limit(limit)
        .with_for_update()
    )
    return list(conn.execute(stmt).all())
