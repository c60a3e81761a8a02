"""SQL for programs and program versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select, update

from trofast.kit.orm import AnyRow, DriverStatement
from trofast.programs.models import program_versions, programs


def find_by_key(conn: Connection, key: str) -> AnyRow | None:
    return conn.execute(select(programs).where(programs.c.key == key)).first()


_GET = select(programs).where(programs.c.id == bindparam("program_id"))


def get(conn: Connection, program_id: int) -> AnyRow | None:
    return conn.execute(_GET, {"program_id": program_id}).first()


_CURRENT_VERSION = DriverStatement(
    select(programs.c.current_version).where(programs.c.id == bindparam("program_id"))
)


def current_version(conn: Connection, program_id: int) -> int | None:
    """The program's current version number (every request reads it: on the driver)."""
    row = _CURRENT_VERSION.execute(conn, {"program_id": program_id}).fetchone()
    return None if row is None else int(row[0])


def insert_program(conn: Connection, key: str, now: datetime) -> int:
    return int(
        conn.execute(
            programs.insert()
            .values(key=key, current_version=0, created_at=now)
            .returning(programs.c.id)
        ).scalar_one()
    )


def lock_program(conn: Connection, program_id: int) -> int:
    """Lock the program row (serialises version numbering); returns the current version."""
    return int(
        conn.execute(
            select(programs.c.current_version).where(programs.c.id == program_id).with_for_update()
        ).scalar_one()
    )


def insert_version(
    conn: Connection, program_id: int, version: int, document: dict[str, Any], now: datetime
) -> None:
    conn.execute(
        program_versions.insert().values(
            program_id=program_id, version=version, document=document, created_at=now
        )
    )
    conn.execute(
        update(programs).where(programs.c.id == program_id).values(current_version=version)
    )


def version_document(conn: Connection, program_id: int, version: int) -> dict[str, Any] | None:
    row = conn.execute(
        select(program_versions.c.document).where(
            program_versions.c.program_id == program_id, program_versions.c.version == version
        )
    ).first()
    return None if row is None else dict(row.document)


def list_programs(conn: Connection) -> list[AnyRow]:
    return list(conn.execute(select(programs).order_by(programs.c.key)).all())
