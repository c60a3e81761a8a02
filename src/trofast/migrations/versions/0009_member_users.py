"""member users: the users of a company member, members.kind, activities.user_id

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-23 16:11:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import trofast.kit.orm

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "member_users",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("program_id", Id, nullable=False),
        sa.Column("member_id", Id, nullable=False),
        sa.Column("external_id", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("role", sa.String(length=50), nullable=True),
        sa.Column("created_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=False),
        sa.Column("removed_at", trofast.kit.orm.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["member_id"], ["members.id"], name=op.f("fk_member_users_member_id_members")
        ),
        sa.ForeignKeyConstraint(
            ["program_id"], ["programs.id"], name=op.f("fk_member_users_program_id_programs")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_member_users")),
        sa.UniqueConstraint("program_id", "email", name=op.f("uq_member_users_program_id_email")),
        sa.UniqueConstraint(
            "program_id", "external_id", name=op.f("uq_member_users_program_id_external_id")
        ),
    )
    with op.batch_alter_table("member_users", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_member_users_member_id"), ["member_id"], unique=False)

    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.add_column(sa.Column("user_id", Id, nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_activities_user_id_member_users"), "member_users", ["user_id"], ["id"]
        )

    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind", sa.String(length=10), server_default=sa.text("'person'"), nullable=False
            )
        )
        batch_op.create_check_constraint(
            op.f("ck_members_kind_known"), "kind IN ('person', 'company')"
        )


def downgrade() -> None:
    with op.batch_alter_table("members", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_members_kind_known"), type_="check")
        batch_op.drop_column("kind")

    with op.batch_alter_table("activities", schema=None) as batch_op:
        batch_op.drop_constraint(
            batch_op.f("fk_activities_user_id_member_users"), type_="foreignkey"
        )
        batch_op.drop_column("user_id")

    with op.batch_alter_table("member_users", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_member_users_member_id"))

    op.drop_table("member_users")
