"""partners: partner-bound API keys, partner settlement accounts, partner activities

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trofast.kit.orm

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "partner_activities",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("program_id", Id, nullable=False),
        sa.Column("partner", sa.String(length=63), nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("type", sa.String(length=10), nullable=False),
        sa.Column("member_id", Id, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("points", sa.BigInteger(), nullable=False),
        sa.Column("original_id", Id, nullable=True),
        sa.Column("written_off", sa.BigInteger(), nullable=False),
        sa.Column("transaction_id", Id, nullable=True),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("occurred_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("created_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(type = 'return') = (original_id IS NOT NULL)",
            name=op.f("ck_partner_activities_return_has_original"),
        ),
        sa.CheckConstraint(
            "type IN ('purchase', 'return')", name=op.f("ck_partner_activities_type_known")
        ),
        sa.CheckConstraint(
            "amount >= 0 AND points >= 0 AND written_off >= 0",
            name=op.f("ck_partner_activities_amounts_valid"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_partner_activities_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["original_id"],
            ["partner_activities.id"],
            name=op.f("fk_partner_activities_original_id_partner_activities"),
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_partner_activities_program_id_programs")
        ),
        sa.ForeignKeyConstraint(
            ["transaction_id"],
            ["ledger_transactions.id"],
            name=op.f("fk_partner_activities_transaction_id_ledger_transactions"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_partner_activities")),
        sa.UniqueConstraint(
            "program_id",
            "partner",
            "external_id",
            name=op.f("uq_partner_activities_program_id_partner_external_id"),
        ),
    )
    with op.batch_alter_table("partner_activities", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_partner_activities_original_id"), ["original_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_partner_activities_program_id_partner_id"),
            ["program_id", "partner", "id"],
            unique=False,
        )

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("partner", sa.String(length=63), nullable=True))
        batch_op.create_unique_constraint(
            batch_op.f("uq_accounts_program_id_kind_unit_partner"),
            ["program_id", "kind", "unit", "partner"],
        )
        batch_op.create_check_constraint(
            op.f("ck_accounts_partner_accounts"),
            "(partner IS NOT NULL) = (kind IN ('partner_issuance', 'partner_redemption'))",
        )

    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.add_column(sa.Column("partner", sa.String(length=63), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_api_keys_partner_bound"), "(scope = 'partner') = (partner IS NOT NULL)"
        )


def downgrade() -> None:
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_api_keys_partner_bound"), type_="check")
        batch_op.drop_column("partner")

    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_accounts_partner_accounts"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("uq_accounts_program_id_kind_unit_partner"), type_="unique"
        )
        batch_op.drop_column("partner")

    with op.batch_alter_table("partner_activities", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_partner_activities_program_id_partner_id"))
        batch_op.drop_index(batch_op.f("ix_partner_activities_original_id"))

    op.drop_table("partner_activities")
