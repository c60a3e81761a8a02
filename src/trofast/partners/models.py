"""Table: activities a partner sent (purchases earning in the host program, and their
returns). The points themselves live in the ledger; this is the partner's own record,
idempotent by `external_id` per partner of a program."""

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

partner_activities = Table(
    "partner_activities",
    metadata,
    id_column(),
    program_column(),
    Column("partner", String(63), nullable=False),
    Column("external_id", String(100), nullable=False),
    Column("type", String(10), nullable=False),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    #: Points earned (a purchase) or taken back (a return) in the host program.
    Column("points", BigInteger, nullable=False),
    #: A return: the purchase it returns, and points of it that had expired (written off).
    Column("original_id", Id, ForeignKey("partner_activities.id"), nullable=True),
    Column("written_off", BigInteger, nullable=False, default=0),
    Column("transaction_id", Id, ForeignKey("ledger_transactions.id"), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("type IN ('purchase', 'return')", name="type_known"),
    CheckConstraint("amount >= 0 AND points >= 0 AND written_off >= 0", name="amounts_valid"),
    CheckConstraint("(type = 'return') = (original_id IS NOT NULL)", name="return_has_original"),
    UniqueConstraint("program_id", "partner", "external_id"),
    Index(None, "program_id", "partner", "id"),
    Index(None, "original_id"),
)
