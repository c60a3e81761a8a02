"""Table metadata shared by every domain module, and column helpers.

Tables are SQLAlchemy Core `Table`s: the hot paths run Core statements, Alembic reads
the same metadata. Every table carries `program_id` (tenant isolation, sharding key).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

from sqlalchemy import BigInteger, Column, DateTime, ForeignKey, Integer, MetaData, TypeDecorator
from sqlalchemy.engine import Dialect, Row

from trofast.kit.clock import as_utc

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
