"""Table: API keys (stored hashed)."""

from sqlalchemy import CheckConstraint, Column, String, Table

from trofast.kit.orm import UtcDateTime, id_column, metadata, program_column

api_keys = Table(
    "api_keys",
    metadata,
    id_column(),
    program_column(),
    Column("prefix", String(16), nullable=False, unique=True),
    Column("secret_hash", String(64), nullable=False),
    Column("scope", String(16), nullable=False),
    Column("name", String(100), nullable=False),
    #: The partner id (program document `partners:`) a `partner`-scope key acts for.
    Column("partner", String(63), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("revoked_at", UtcDateTime, nullable=True),
    CheckConstraint("(scope = 'partner') = (partner IS NOT NULL)", name="partner_bound"),
)
