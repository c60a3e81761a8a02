"""SQL for activities."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects import postgresql, sqlite

from trofast.activities.models import activities
from trofast.kit.orm import AnyRow
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
    if not rows:
        return []
    result = conn.execute(
        activities.insert().returning(activities.c.id, sort_by_parameter_order=True), rows
    )
    return [int(v) for v in result.scalars()]


def insert_new(conn: Connection, values: dict[str, Any]) -> int | None:
    """Insert unless the external_id exists (then None): no failed statement, no savepoint."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = (
        dialect.insert(activities)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["program_id", "external_id"])
        .returning(activities.c.id)
    )
    value = conn.execute(stmt).scalar_one_or_none()
    return None if value is None else int(value)


def returns_of(conn: Connection, original_id: int) -> list[AnyRow]:
    return list(
        conn.execute(
            select(activities.c.amount, activities.c.points, activities.c.body).where(
                activities.c.original_id == original_id
            )
        ).all()
    )


def lot_ids_of(conn: Connection, activity_id: int) -> list[int]:
    return [
        int(v)
        for v in conn.execute(select(lots.c.id).where(lots.c.activity_id == activity_id)).scalars()
    ]


def set_outcome(conn: Connection, activity_id: int, points: int, result: dict[str, Any]) -> None:
    conn.execute(
        activities.update()
        .where(activities.c.id == activity_id)
        .values(points=points, result=result)
    )
