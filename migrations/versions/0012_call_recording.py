"""Call recording: a switch on numbers, queues and users; the file and its length on the call.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 11:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_SWITCHED = ("numbers", "queues", "users")


def upgrade() -> None:
    for table in _SWITCHED:
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column("record_calls", sa.Boolean(), nullable=False, server_default=sa.false())
            )
    with op.batch_alter_table("calls") as batch:
        batch.add_column(sa.Column("recording_path", sa.String(500), nullable=True))
        batch.add_column(sa.Column("recording_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("calls") as batch:
        batch.drop_column("recording_seconds")
        batch.drop_column("recording_path")
    for table in reversed(_SWITCHED):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("record_calls")
