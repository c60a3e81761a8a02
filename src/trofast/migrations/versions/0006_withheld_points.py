"""withheld points: the `deduct` negative-balance policy

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:38:51.142416
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("withheld", sa.BigInteger(), nullable=False, server_default=sa.text("0"))
        )
        batch_op.create_check_constraint(op.f("ck_accounts_withheld_not_negative"), "withheld >= 0")


def downgrade() -> None:
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_accounts_withheld_not_negative"), type_="check")
        batch_op.drop_column("withheld")
