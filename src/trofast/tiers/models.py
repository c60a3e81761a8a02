"""Tables: each member's current tier and the history of tier changes.

A member without a `member_tiers` row is in the program's entry tier (the first one): rows
are written only when a member first moves above it, so programs with many members who
never qualify keep no row for them. The tiers themselves live in the program document.
"""

from sqlalchemy import CheckConstraint, Column, ForeignKey, Index, String, Table, UniqueConstraint

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

member_tiers = Table(
    "member_tiers",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("tier", String(63), nullable=False),
    Column("since", UtcDateTime, nullable=False),
    #: The qualification period reviewed when it ends: [period_start, qualified_until).
    #: Until `qualified_until` the tier is secured; both null in the entry tier.
    Column("period_start", UtcDateTime, nullable=True),
    Column("qualified_until", UtcDateTime, nullable=True),
    #: Set when a review found the member short: the downgrade waits until then.
    Column("grace_until", UtcDateTime, nullable=True),
    #: A tier set by an admin: the member is never below it before `manual_until`.
    Column("manual_tier", String(63), nullable=True),
    Column("manual_until", UtcDateTime, nullable=True),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("(period_start IS NULL) = (qualified_until IS NULL)", name="period_complete"),
    CheckConstraint("(manual_tier IS NULL) = (manual_until IS NULL)", name="floor_complete"),
    UniqueConstraint("program_id", "member_id"),
    #: "Is any review due?" without reading every row (a member due for its grace end has
    #: an earlier `qualified_until` as well).
    Index(None, "program_id", "qualified_until"),
)

tier_history = Table(
    "tier_history",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("from_tier", String(63), nullable=True),
    Column("to_tier", String(63), nullable=False),
    Column("reason", String(20), nullable=False),
    Column("actor", String(100), nullable=False),
    Column("at", UtcDateTime, nullable=False),
    CheckConstraint("reason IN ('upgrade', 'downgrade', 'manual', 'grace')", name="reason_known"),
    Index(None, "program_id", "member_id", "id"),
)
