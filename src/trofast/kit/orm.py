"""Table metadata shared by every domain module, and column helpers.

Tables are SQLAlchemy Core `Table`s: the hot paths run Core statements, Alembic reads
the same metadata. Every table carries `program_id` (tenant isolation, sharding key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    TypeDecorator,
    func,
    select,
)
from sqlalchemy.engine import Dialect, Row

from trofast.kit.clock import as_utc
from trofast.kit.errors import InvariantBroken

#: A result row of any shape.
AnyRow: TypeAlias = Row[*tuple[Any, ...]]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

#: 64-bit ids on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid alias.
Id = BigInteger().with_variant(Integer(), "sqlite")
#: The largest id either database can store; a bigger reference cannot exist (and binding it
#: fails in the driver), so input is checked against it.
MAX_ID = 2**63 - 1


class UtcDateTime(TypeDecorator[datetime]):
    """A timestamp stored as UTC and always returned timezone-aware."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        utc = as_utc(value)
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        return None if value is None else as_utc(value)


def id_column() -> Column[int]:
    return Column("id", Id, primary_key=True, autoincrement=True)


def program_column() -> Column[int]:
    return Column("program_id", Id, ForeignKey("programs.id"), nullable=False)


def insert_returning_ids(conn: Connection, table: Table, rows: list[dict[str, Any]]) -> list[int]:
    """Insert `rows` in one multi-row statement; their new ids, in the order of `rows`.

    On SQLite the ids are assigned up front: every write transaction holds the database's
    only write lock (`BEGIN IMMEDIATE`), so max(id)+1... cannot be taken by anyone else, and
    a plain executemany is many times faster than RETURNING row by row.
    """
    if not rows:
        return []
    if conn.dialect.name == "sqlite":
        last = int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())
        ids = list(range(last + 1, last + 1 + len(rows)))
        conn.execute(table.insert(), [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
        return ids
    result = conn.execute(table.insert().returning(table.c.id, sort_by_parameter_order=True), rows)
    ids = [int(v) for v in result.scalars()]
    if len(ids) != len(rows):
        raise InvariantBroken(f"{table.name}: inserted {len(ids)} of {len(rows)} rows")
    return ids
