"""Table: members."""

from sqlalchemy import JSON, Boolean, Column, Date, Index, String, Table, UniqueConstraint

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

members = Table(
    "members",
    metadata,
    id_column(),
    program_column(),
    Column("loyalty_number", String(20), nullable=False),
    Column("external_id", String(100), nullable=True),
    Column("email", String(254), nullable=True),
    Column("phone", String(20), nullable=True),
    Column("first_name", String(100), nullable=True),
    Column("last_name", String(100), nullable=True),
    Column("birth_date", Date, nullable=True),
    Column("locale", String(10), nullable=True),
    Column("tags", JSON, nullable=False, default=list),
    Column("marketing_consent", Boolean, nullable=False),
    Column("consent_changed_at", UtcDateTime, nullable=True),
    Column("channel", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    #: The household the member belongs to (households.id; no foreign key: the two tables
    #: would reference each other).
    Column("household_id", Id, nullable=True),
    Column("enrolled_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "loyalty_number"),
    UniqueConstraint("program_id", "external_id"),
    UniqueConstraint("program_id", "email"),
    UniqueConstraint("program_id", "phone"),
    Index(None, "program_id", "last_name"),
    Index(None, "household_id"),
)
