"""paid memberships: memberships and membership_history

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 15:03:20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trofast.kit.orm

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "memberships",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("plan", sa.String(length=63), nullable=False),
        sa.Column("started_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("trial_until", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("paid_until", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("ends_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("cancelled_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("payment_failed_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("lapsed_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("trial_used", sa.Boolean(), nullable=False),
        sa.Column("updated_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "(ends_at IS NULL) <> (lapsed_at IS NULL)", name=op.f("ck_memberships_ended_once")
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_memberships_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_memberships_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memberships")),
        sa.UniqueConstraint(
            "program_id", "member_id", name=op.f("uq_memberships_program_id_member_id")
        ),
    )
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_memberships_program_id_ends_at"), ["program_id", "ends_at"], unique=False
        )

    op.create_table(
        "membership_history",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "program_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "member_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("plan", sa.String(length=63), nullable=False),
        sa.Column("reference", sa.String(length=200), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("paid_until", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.Column("at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("recorded_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('started', 'renewed', 'payment_failed', 'cancelled', 'lapsed')",
            name=op.f("ck_membership_history_kind_known"),
        ),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_membership_history_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"],
            ["programs.id"],
            name=op.f("fk_membership_history_program_id_programs"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_membership_history")),
        sa.UniqueConstraint(
            "program_id", "reference", name=op.f("uq_membership_history_program_id_reference")
        ),
    )
    with op.batch_alter_table("membership_history", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_membership_history_program_id_member_id_id"),
            ["program_id", "member_id", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("membership_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_membership_history_program_id_member_id_id"))

    op.drop_table("membership_history")
    with op.batch_alter_table("memberships", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_memberships_program_id_ends_at"))

    op.drop_table("memberships")
