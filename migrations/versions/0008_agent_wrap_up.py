"""An agent's own wrap-up time, which overrides the queue's after an ACD call.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 21:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # batch: SQLite cannot alter a table in place.
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("wrap_up_time", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.drop_column("wrap_up_time")
