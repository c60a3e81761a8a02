"""Tables: households and invitations to join one. A member belongs to at most one
household (`members.household_id`)."""

from sqlalchemy import Column, ForeignKey, Index, String, Table, UniqueConstraint

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

households = Table(
    "households",
    metadata,
    id_column(),
    program_column(),
    Column("name", String(100), nullable=False),
    Column("owner_id", Id, ForeignKey("members.id"), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

household_invites = Table(
    "household_invites",
    metadata,
    id_column(),
    program_column(),
    Column("household_id", Id, ForeignKey("households.id"), nullable=False),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("token", String(64), nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=False),
    Column("answered_at", UtcDateTime, nullable=True),
    UniqueConstraint("household_id", "member_id", "created_at"),
    Index(None, "program_id", "member_id"),
)
