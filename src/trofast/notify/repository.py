"""SQL for the outbox and for the expiry-warning reads."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from trofast.kit.orm import AnyRow
from trofast.ledger.models import lots
from trofast.members.models import members
from trofast.notify.models import outbox


def insert_event(
    conn: Connection,
    program_id: int,
    topic: str,
    key: str,
    payload: dict[str, Any],
    now: datetime,
) -> bool:
    """Insert one event unless its key exists (ON CONFLICT DO NOTHING); True if inserted."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = conn.execute(
        dialect_insert(outbox)
        .values(
            program_id=program_id,
            topic=topic,
            key=key,
            payload=payload,
            created_at=now,
            available_at=now,
            attempts=0,
        )
        .on_conflict_do_nothing(index_elements=["program_id", "key"])
        .returning(outbox.c.id)
    )
    return result.first() is not None


def insert_events(
    conn: Connection,
    program_id: int,
    topic: str,
    events: list[tuple[str, dict[str, Any]]],
    now: datetime,
) -> None:
    """Insert many (key, payload) events of one topic in one executemany, skipping keys
    that exist (ON CONFLICT DO NOTHING)."""
    dialect_insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    rows = [
        {
            "program_id": program_id,
            "topic": topic,
            "key": key,
            "payload": payload,
            "created_at": now,
            "available_at": now,
            "attempts": 0,
        }
        for key, payload in events
    ]
    if rows:
        conn.execute(
            dialect_insert(outbox).on_conflict_do_nothing(index_elements=["program_id", "key"]),
            rows,
        )


def existing_keys(conn: Connection, program_id: int, keys: Collection[str]) -> set[str]:
    """Which of `keys` the program's outbox already holds."""
    found: set[str] = set()
    wanted = sorted(keys)
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found.update(
            str(k)
            for k in conn.execute(
                select(outbox.c.key).where(
                    outbox.c.program_id == program_id, outbox.c.key.in_(chunk)
                )
            ).scalars()
        )
    return found


def page(
    conn: Connection, program_id: int, topic: str | None, before_id: int, limit: int
) -> list[AnyRow]:
    """Events newest first, ids below `before_id` (0: from the newest)."""
    stmt = select(outbox).where(outbox.c.program_id == program_id)
    if topic is not None:
        stmt = stmt.where(outbox.c.topic == topic)
    if before_id:
        stmt = stmt.where(outbox.c.id < before_id)
    return list(conn.execute(stmt.order_by(outbox.c.id.desc()).limit(limit)).all())


def _expiring_lots(program_id: int, now: datetime, until: datetime) -> Any:
    """Vested lots with points left that expire after `now` and by `until`."""
    return (
        lots.c.program_id == program_id,
        lots.c.remaining > 0,
        lots.c.pending.is_(False),
        lots.c.expires_at > now,
        lots.c.expires_at <= until,
    )


def expiring_members(
    conn: Connection, program_id: int, now: datetime, until: datetime, after_id: int, limit: int
) -> list[AnyRow]:
    """Members with vested points expiring in (now, until]: member id, loyalty number, the
    points and the earliest expiry; by member id, after `after_id`."""
    stmt = (
        select(
            lots.c.member_id,
            members.c.loyalty_number,
            func.sum(lots.c.remaining).label("points"),
            func.min(lots.c.expires_at).label("earliest"),
        )
        .join(members, members.c.id == lots.c.member_id)
        .where(*_expiring_lots(program_id, now, until), lots.c.member_id > after_id)
        .group_by(lots.c.member_id, members.c.loyalty_number)
        .order_by(lots.c.member_id)
        .limit(limit)
    )
    return list(conn.execute(stmt).all())


def expiring_by_time(
    conn: Connection, program_id: int, now: datetime, until: datetime
) -> list[AnyRow]:
    """(member id, loyalty number, expires_at, points) of every vested lot expiry moment in
    (now, until], summed per member and moment; for the expiry-warning job."""
    stmt = (
        select(
            lots.c.member_id,
            members.c.loyalty_number,
            lots.c.expires_at,
            func.sum(lots.c.remaining).label("points"),
        )
        .join(members, members.c.id == lots.c.member_id)
        .where(*_expiring_lots(program_id, now, until))
        .group_by(lots.c.member_id, members.c.loyalty_number, lots.c.expires_at)
        .order_by(lots.c.member_id, lots.c.expires_at)
    )
    return list(conn.execute(stmt).all())
