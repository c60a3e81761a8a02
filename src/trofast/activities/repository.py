"""SQL for activities."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from trofast.activities.models import activities, rule_counters
from trofast.kit.orm import AnyRow, insert_returning_ids
from trofast.ledger.models import lots


def find(conn: Connection, program_id: int, external_id: str) -> AnyRow | None:
    return conn.execute(
        select(activities).where(
            activities.c.program_id == program_id, activities.c.external_id == external_id
        )
    ).first()


def find_many(conn: Connection, program_id: int, external_ids: set[str]) -> dict[str, AnyRow]:
    if not external_ids:
        return {}
    rows = conn.execute(
        select(activities).where(
            activities.c.program_id == program_id, activities.c.external_id.in_(external_ids)
        )
    ).all()
    return {str(r.external_id): r for r in rows}


def insert_many(conn: Connection, rows: list[dict[str, Any]]) -> list[int]:
    """Insert several activities in one multi-row statement; their ids in order."""
    return insert_returning_ids(conn, activities, rows)


def insert_new(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert unless the external_id exists (then None): no failed statement, no savepoint."""
    stmt = _INSERT_NEW[conn.dialect.name == "postgresql"]
    value = conn.execute(stmt, values).scalar_one_or_none()
    return None if value is None else int(value)


_INSERT_NEW = {
    is_pg: dialect.insert(activities)
    .on_conflict_do_nothing(index_elements=["program_id", "external_id"])
    .returning(activities.c.id)
    for is_pg, dialect in ((True, postgresql), (False, sqlite))
}


def returns_of(conn: Connection, original_id: int) -> list[AnyRow]:
    return list(
        conn.execute(
            select(
                activities.c.amount, activities.c.points, activities.c.body, activities.c.result
            ).where(activities.c.original_id == original_id)
        ).all()
    )


def lots_of(conn: Connection, activity_id: int) -> list[AnyRow]:
    """The lots an activity created: id, account and what expired of each."""
    return list(
        conn.execute(
            select(lots.c.id, lots.c.account_id, lots.c.expired).where(
                lots.c.activity_id == activity_id
            )
        ).all()
    )


def set_outcome(conn: Connection, activity_id: int, points: int, result: dict[str, Any]) -> None:
    conn.execute(
        activities.update()
        .where(activities.c.id == activity_id)
        .values(points=points, result=result)
    )


def load_counters(
    conn: Connection,
    program_id: int,
    member_id: int,
    member_keys: set[str],
    program_keys: set[str],
    now: datetime,
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """(member counters, program counters) for the given keys; missing keys are zero.

    Program-wide counters (rule budgets) are shared by all members, so their rows are
    created if missing and locked until the transaction ends.
    """
    shared: dict[str, int] = {}
    if program_keys:
        add_to_counters(conn, program_id, [(0, key, 0, 0) for key in sorted(program_keys)], now)
        rows = conn.execute(
            select(rule_counters.c.key, rule_counters.c.points)
            .where(
                rule_counters.c.program_id == program_id,
                rule_counters.c.member_id == 0,
                rule_counters.c.key.in_(program_keys),
            )
            .order_by(rule_counters.c.key)
            .with_for_update()
        ).all()
        shared = {str(r.key): int(r.points) for r in rows}
    mine: dict[str, tuple[int, int]] = {}
    if member_keys:
        member_rows = conn.execute(
            select(rule_counters.c.key, rule_counters.c.points, rule_counters.c.times).where(
                rule_counters.c.program_id == program_id,
                rule_counters.c.member_id == member_id,
                rule_counters.c.key.in_(member_keys),
            )
        ).all()
        mine = {str(r.key): (int(r.points), int(r.times)) for r in member_rows}
    return mine, shared


def load_counters_many(
    conn: Connection,
    program_id: int,
    member_ids: set[int],
    member_keys: set[str],
    program_keys: set[str],
    now: datetime,
) -> tuple[dict[int, dict[str, tuple[int, int]]], dict[str, int]]:
    """`load_counters` for many members at once: counters per member, program counters."""
    _, shared = load_counters(conn, program_id, 0, set(), program_keys, now)
    per_member: dict[int, dict[str, tuple[int, int]]] = {}
    if member_ids and member_keys:
        rows = conn.execute(
            select(
                rule_counters.c.member_id,
                rule_counters.c.key,
                rule_counters.c.points,
                rule_counters.c.times,
            ).where(
                rule_counters.c.program_id == program_id,
                rule_counters.c.member_id.in_(member_ids),
                rule_counters.c.key.in_(member_keys),
            )
        ).all()
        for r in rows:
            per_member.setdefault(int(r.member_id), {})[str(r.key)] = (int(r.points), int(r.times))
    return per_member, shared


def add_to_counters(
    conn: Connection, program_id: int, deltas: list[tuple[int, str, int, int]], now: datetime
) -> None:
    """Add (member_id, key, points, times) to counters, creating them as needed."""
    if not deltas:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(rule_counters)
    stmt = stmt.on_conflict_do_update(
        index_elements=["program_id", "member_id", "key"],
        set_={
            "points": rule_counters.c.points + stmt.excluded.points,
            "times": rule_counters.c.times + stmt.excluded.times,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    conn.execute(
        stmt,
        [
            {
                "program_id": program_id,
                "member_id": member,
                "key": key,
                "points": points,
                "times": times,
                "updated_at": now,
            }
            for member, key, points, times in deltas
        ],
    )


def member_counters(
    conn: Connection, program_id: int, member_id: int, prefix: str
) -> dict[str, int]:
    """A member's counters whose key starts with `prefix` (e.g. stamps)."""
    rows = conn.execute(
        select(rule_counters.c.key, rule_counters.c.points).where(
            rule_counters.c.program_id == program_id,
            rule_counters.c.member_id == member_id,
            rule_counters.c.key.startswith(prefix),
        )
    ).all()
    return {str(r.key): int(r.points) for r in rows}
