"""Tables: programs and their immutable versions."""

from sqlalchemy import JSON, Column, ForeignKey, Integer, String, Table, UniqueConstraint

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata

programs = Table(
    "programs",
    metadata,
    id_column(),
    Column("key", String(63), nullable=False, unique=True),
    Column("current_version", Integer, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

program_versions = Table(
    "program_versions",
    metadata,
    id_column(),
    Column("program_id", Id, ForeignKey("programs.id"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("document", JSON, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "version"),
)
