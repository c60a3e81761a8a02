"""Tables: each member's membership (one row per member and program, reused when a lapsed
member pays again) and the history of everything that happened to it.

The plans themselves live in the program document. A membership runs until `ends_at`
unless a payment comes first; once it has lapsed `ends_at` is null and `lapsed_at` says
when it ended, so the lapse job's index covers running memberships only.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    String,
    Table,
    UniqueConstraint,
)

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

memberships = Table(
    "memberships",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("plan", String(63), nullable=False),
    #: When the current run began (a payment after a lapse starts a new run).
    Column("started_at", UtcDateTime, nullable=False),
    #: End of the free trial of this run, if it began with one.
    Column("trial_until", UtcDateTime, nullable=True),
    #: End of what is covered: the trial and every paid period.
    Column("paid_until", UtcDateTime, nullable=False),
    #: When it lapses unless a payment comes: `paid_until` plus the plan's grace days, or
    #: `paid_until` itself once cancelled. Null once lapsed.
    Column("ends_at", UtcDateTime, nullable=True),
    Column("cancelled_at", UtcDateTime, nullable=True),
    #: The first `payment_failed` since the last payment: the membership is in grace.
    Column("payment_failed_at", UtcDateTime, nullable=True),
    Column("lapsed_at", UtcDateTime, nullable=True),
    #: Whether the member ever had a trial in this program (a trial is given once).
    Column("trial_used", Boolean, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    CheckConstraint("(ends_at IS NULL) <> (lapsed_at IS NULL)", name="ended_once"),
    UniqueConstraint("program_id", "member_id"),
    #: "Which memberships are due to lapse?" reads running rows only.
    Index(None, "program_id", "ends_at"),
)

membership_history = Table(
    "membership_history",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("plan", String(63), nullable=False),
    #: The payment provider's reference of a payment: a payment counts once.
    Column("reference", String(200), nullable=True),
    Column("amount", BigInteger, nullable=True),
    #: `paid_until` after the change.
    Column("paid_until", UtcDateTime, nullable=True),
    #: When it happened (the event's `occurred_at`, or the end for a lapse).
    Column("at", UtcDateTime, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    CheckConstraint(
        "kind IN ('started', 'renewed', 'payment_failed', 'cancelled', 'lapsed')",
        name="kind_known",
    ),
    UniqueConstraint("program_id", "reference"),
    Index(None, "program_id", "member_id", "id"),
)
