"""a partial index on the returns of a period (activities of type 'return')

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-23 21:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_activities_returns",
        "activities",
        ["program_id", "occurred_at"],
        unique=False,
        sqlite_where=sa.text("type = 'return'"),
        postgresql_where=sa.text("type = 'return'"),
    )


def downgrade() -> None:
    op.drop_index("ix_activities_returns", table_name="activities")
