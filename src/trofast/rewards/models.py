"""Tables: vouchers (what a redemption issues), reward stock counters and gift-card codes.

The catalogue itself lives in the program document (`rewards:`), versioned with it.
"""

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    UniqueConstraint,
)

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

vouchers = Table(
    "vouchers",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("reward", String(63), nullable=False),
    Column("type", String(30), nullable=False),
    #: Unique, unguessable; what the member shows at the till or types in the web shop.
    Column("code", String(40), nullable=False, unique=True),
    Column("status", String(20), nullable=False),
    Column("points", BigInteger, nullable=False),
    #: The redemption's idempotency reference, unique per program.
    Column("reference", String(200), nullable=False),
    #: What the voucher gives, copied from the reward when issued (discount, sku, cause, ...).
    Column("benefit", JSON, nullable=False),
    Column("channel", String(20), nullable=True),
    Column("program_version", Integer, nullable=False),
    #: The ledger transaction that spent the points (none for a granted, free voucher).
    Column("transaction_id", Id, ForeignKey("ledger_transactions.id"), nullable=True),
    Column("gift_code_id", Id, ForeignKey("gift_codes.id"), nullable=True),
    Column("issued_at", UtcDateTime, nullable=False),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("used_at", UtcDateTime, nullable=True),
    Column("used_by", String(100), nullable=True),
    Column("cancelled_at", UtcDateTime, nullable=True),
    CheckConstraint("status IN ('issued', 'used', 'expired', 'cancelled')", name="status_known"),
    CheckConstraint("points >= 0", name="points_not_negative"),
    UniqueConstraint("program_id", "reference"),
    Index(None, "program_id", "member_id", "reward"),
    Index(None, "program_id", "reward", "status"),
    Index(None, "program_id", "used_by"),
)

#: How many of a reward were issued (not cancelled): the row a redemption locks to keep the
#: stock (e.g. places at a VIP event) under concurrency.
reward_stock = Table(
    "reward_stock",
    metadata,
    id_column(),
    program_column(),
    Column("reward", String(63), nullable=False),
    Column("issued", BigInteger, nullable=False),
    CheckConstraint("issued >= 0", name="issued_not_negative"),
    UniqueConstraint("program_id", "reward"),
)

#: Gift-card codes from a provider (imported) or generated; a voucher takes one.
gift_codes = Table(
    "gift_codes",
    metadata,
    id_column(),
    program_column(),
    Column("pool", String(63), nullable=False),
    Column("code", String(100), nullable=False),
    Column("voucher_id", Id, nullable=True),
    Column("imported_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "pool", "code"),
    Index(None, "program_id", "pool", "voucher_id"),
)
