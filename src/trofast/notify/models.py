"""Table: the outbox. A row is written in the same transaction as the change it reports and
delivered at least once by the worker; `key` makes raising the same event twice a no-op."""

from sqlalchemy import JSON, Column, Index, Integer, String, Table, Text, UniqueConstraint

from trofast.kit.orm import UtcDateTime, id_column, metadata, program_column

outbox = Table(
    "outbox",
    metadata,
    id_column(),
    program_column(),
    Column("topic", String(60), nullable=False),
    Column("key", String(200), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("available_at", UtcDateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("delivered_at", UtcDateTime, nullable=True),
    Column("last_error", Text, nullable=True),
    UniqueConstraint("program_id", "key"),
    Index(None, "program_id", "topic", "id"),
    Index(None, "delivered_at", "available_at"),
)
