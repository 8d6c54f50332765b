"""Queue callbacks: the queue's callback options and the callers' requests.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 17:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from core.db import UtcDateTime

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("queues") as batch:
        batch.add_column(sa.Column("callback_key", sa.String(1), nullable=True))
        batch.add_column(sa.Column(
            "callback_attempts", sa.Integer(), nullable=False, server_default=sa.text("3")
        ))  # fmt: skip
        batch.add_column(sa.Column(
            "callback_retry_interval", sa.Integer(), nullable=False, server_default=sa.text("300")
        ))  # fmt: skip
    op.create_table(
        "callbacks",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("queue_id", sa.Integer(), nullable=False, index=True),
        sa.Column("call_id", sa.Integer(), nullable=False, index=True),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("shown_number", sa.String(128), nullable=False),
        sa.Column("number_records", sa.Boolean(), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("entered_at", UtcDateTime(timezone=True), nullable=False),
        sa.Column("requested_at", UtcDateTime(timezone=True), nullable=False, index=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UtcDateTime(timezone=True), nullable=True),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UtcDateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("callbacks")
    with op.batch_alter_table("queues") as batch:
        batch.drop_column("callback_retry_interval")
        batch.drop_column("callback_attempts")
        batch.drop_column("callback_key")
