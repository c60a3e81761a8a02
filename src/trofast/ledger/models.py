"""Ledger tables. Only `trofast.ledger.service` writes them (a test enforces it).

Member accounts keep running counters and are the row a spender locks. System accounts
(issuance, redemption, breakage, adjustment, and per partner partner_issuance and
partner_redemption) keep none, so they never become a hot row;
their balances are summed from transfers on demand.
"""

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

accounts = Table(
    "accounts",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=True),
    Column("kind", String(20), nullable=False),
    Column("unit", String(20), nullable=False),
    Column("credits_posted", BigInteger, nullable=False, default=0),
    Column("debits_posted", BigInteger, nullable=False, default=0),
    Column("credits_pending", BigInteger, nullable=False, default=0),
    Column("debits_pending", BigInteger, nullable=False, default=0),
    Column("debt", BigInteger, nullable=False, default=0),
    #: Points a return could not take back under the `deduct` policy: withheld from the
    #: member's next earnings, without lowering what is available now.
    Column("withheld", BigInteger, nullable=False, default=0),
    Column("debits_must_not_exceed_credits", Boolean, nullable=False),
    #: The partner (program document `partners:`) a partner settlement account belongs to.
    Column("partner", String(63), nullable=True),
    CheckConstraint(
        "credits_posted >= 0 AND debits_posted >= 0 AND credits_pending >= 0"
        " AND debits_pending >= 0 AND debt >= 0",
        name="counters_not_negative",
    ),
    CheckConstraint("withheld >= 0", name="withheld_not_negative"),
    CheckConstraint(
        "NOT debits_must_not_exceed_credits OR debits_posted + debits_pending <= credits_posted",
        name="debits_within_credits",
    ),
    UniqueConstraint("program_id", "member_id", "kind", "unit"),
    CheckConstraint(
        "(partner IS NOT NULL) = (kind IN ('partner_issuance', 'partner_redemption'))",
        name="partner_accounts",
    ),
    #: One settlement account per partner, kind and unit (other accounts have no partner,
    #: and NULLs never collide).
    UniqueConstraint("program_id", "kind", "unit", "partner"),
)

ledger_transactions = Table(
    "ledger_transactions",
    metadata,
    id_column(),
    program_column(),
    Column("kind", String(20), nullable=False),
    Column("idempotency_key", String(200), nullable=False),
    Column("request_hash", String(64), nullable=True),
    Column("member_id", Id, ForeignKey("members.id"), nullable=True),
    Column("activity_id", Id, ForeignKey("activities.id"), nullable=True),
    Column("rule", String(100), nullable=True),
    Column("program_version", Integer, nullable=True),
    Column("actor", String(100), nullable=False),
    Column("reference", String(200), nullable=True),
    Column("reason", Text, nullable=True),
    Column("reverses_id", Id, ForeignKey("ledger_transactions.id"), nullable=True),
    Column("effective_at", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "idempotency_key"),
    Index(None, "member_id", "id"),
    Index(None, "activity_id"),
)

lots = Table(
    "lots",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("transaction_id", Id, ForeignKey("ledger_transactions.id"), nullable=False),
    Column("activity_id", Id, ForeignKey("activities.id"), nullable=True),
    Column("rule", String(100), nullable=True),
    Column("original", BigInteger, nullable=False),
    Column("remaining", BigInteger, nullable=False),
    Column("held", BigInteger, nullable=False, default=0),
    Column("consumed", BigInteger, nullable=False, default=0),
    Column("expired", BigInteger, nullable=False, default=0),
    Column("reversed", BigInteger, nullable=False, default=0),
    Column("pending", Boolean, nullable=False),
    Column("vests_at", UtcDateTime, nullable=True),
    Column("expires_at", UtcDateTime, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint(
        "original > 0 AND remaining >= 0 AND held >= 0 AND consumed >= 0"
        " AND expired >= 0 AND reversed >= 0",
        name="amounts_valid",
    ),
    CheckConstraint(
        "original = remaining + held + consumed + expired + reversed", name="amounts_add_up"
    ),
    Index(None, "account_id", "pending", "expires_at"),
    Index(None, "activity_id"),
    Index(
        "ix_lots_vesting_due",
        "program_id",
        "vests_at",
        postgresql_where=text("pending"),
        sqlite_where=text("pending"),
    ),
    Index(
        "ix_lots_expiry_due",
        "program_id",
        "expires_at",
        postgresql_where=text("remaining > 0"),
        sqlite_where=text("remaining > 0"),
    ),
)

transfers = Table(
    "transfers",
    metadata,
    id_column(),
    program_column(),
    Column("transaction_id", Id, ForeignKey("ledger_transactions.id"), nullable=False),
    Column("debit_account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("credit_account_id", Id, ForeignKey("accounts.id"), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("phase", String(10), nullable=False),
    Column("pending_id", Id, ForeignKey("transfers.id"), nullable=True),
    Column("lot_id", Id, ForeignKey("lots.id"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    CheckConstraint("amount > 0", name="amount_positive"),
    CheckConstraint("debit_account_id <> credit_account_id", name="two_accounts"),
    CheckConstraint("phase IN ('single', 'pending', 'post', 'void')", name="phase_known"),
    CheckConstraint(
        "(phase IN ('post', 'void')) = (pending_id IS NOT NULL)", name="resolution_has_pending"
    ),
    # A pending transfer is resolved (posted or voided) at most once.
    UniqueConstraint("pending_id"),
    Index(None, "transaction_id"),
    Index(None, "lot_id"),
)
