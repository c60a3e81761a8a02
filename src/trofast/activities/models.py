"""Table: activities, kept forever (analytics and what-if replay read them)."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
    text,
)

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

activities = Table(
    "activities",
    metadata,
    id_column(),
    program_column(),
    Column("external_id", String(100), nullable=False),
    Column("type", String(20), nullable=False),
    Column("member_id", Id, ForeignKey("members.id"), nullable=True),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("amount", BigInteger, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("store", String(100), nullable=True),
    Column("channel", String(20), nullable=True),
    Column("event_type", String(50), nullable=True),
    Column("original_id", Id, ForeignKey("activities.id"), nullable=True),
    Column("body", JSON, nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("program_version", Integer, nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("result", JSON, nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    #: The member's user who made it (a company's buyer), if the activity named one.
    Column("user_id", Id, ForeignKey("member_users.id"), nullable=True),
    UniqueConstraint("program_id", "external_id"),
    Index(None, "program_id", "member_id", "occurred_at"),
    Index(None, "program_id", "occurred_at"),
    Index(None, "original_id"),
    #: The returns of a period (a what-if replay first reads which purchases they take back).
    Index(
        "ix_activities_returns",
        "program_id",
        "occurred_at",
        sqlite_where=text("type = 'return'"),
        postgresql_where=text("type = 'return'"),
    ),
)

#: What rule limits and stamp cards remember: points and times per counter key, per member
#: (member_id 0: program-wide, e.g. a rule's budget). Written only by activities.service.
rule_counters = Table(
    "rule_counters",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, nullable=False),
    Column("key", String(120), nullable=False),
    Column("points", BigInteger, nullable=False),
    Column("times", Integer, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "member_id", "key"),
)
