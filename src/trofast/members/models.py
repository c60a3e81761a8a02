"""Tables: members, the users of a member that is a company, and erasures of members."""

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Date,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)

from trofast.kit.orm import Id, UtcDateTime, id_column, metadata, program_column

members = Table(
    "members",
    metadata,
    id_column(),
    program_column(),
    #: Null once the member is erased (the retired number moves to member_erasures).
    Column("loyalty_number", String(20), nullable=True),
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
    #: `person`, or `company`: a business member whose users (member_users) act for it.
    Column("kind", String(10), nullable=False, server_default=text("'person'")),
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
    CheckConstraint("kind IN ('person', 'company')", name="kind_known"),
)

#: The people who act for a company member (buyers, the account manager...): their
#: activities earn for the company. `external_id` (the business's user id, unique in the
#: program) is how activities name them; a user belongs to one member, for good. A removed
#: user keeps its row (activities point at it) without name and e-mail.
member_users = Table(
    "member_users",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False),
    Column("external_id", String(100), nullable=False),
    Column("name", String(200), nullable=True),
    Column("email", String(254), nullable=True),
    Column("role", String(50), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("removed_at", UtcDateTime, nullable=True),
    UniqueConstraint("program_id", "external_id"),
    UniqueConstraint("program_id", "email"),
    Index(None, "member_id"),
)

#: One row per erased member (docs/privacy.md): when, why and by whom, what the erasure
#: forfeited, cancelled and dropped (its answer, replayed when asked again), and the
#: member's retired loyalty number, which is never issued again and which lookups refuse
#: with 410 `member_erased`. No personal data.
member_erasures = Table(
    "member_erasures",
    metadata,
    id_column(),
    program_column(),
    Column("member_id", Id, ForeignKey("members.id"), nullable=False, unique=True),
    Column("loyalty_number", String(20), nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(100), nullable=False),
    Column("points_forfeited", BigInteger, nullable=False),
    Column("pending_points_forfeited", BigInteger, nullable=False),
    Column("money_forfeited", BigInteger, nullable=False),
    Column("vouchers_cancelled", BigInteger, nullable=False),
    Column("messages_dropped", BigInteger, nullable=False),
    Column("erased_at", UtcDateTime, nullable=False),
    UniqueConstraint("program_id", "loyalty_number"),
)
