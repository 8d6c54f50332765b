"""Calls: inbound numbers (read by Kamailio too) and call detail records.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 07:48:22.677841
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=16), nullable=False),
        sa.Column("caller", sa.String(length=128), nullable=False),
        sa.Column("called", sa.String(length=128), nullable=False),
        sa.Column("connected_to", sa.String(length=128), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("worker_id", sa.Integer(), nullable=False),
        sa.Column("started_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("system_answered_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("answered_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("ended_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("disposition", sa.String(length=16), nullable=True),
        sa.Column("hangup_by", sa.String(length=16), nullable=True),
        sa.Column("legs", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_calls")),
    )
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_calls_direction"), ["direction"], unique=False)
        batch_op.create_index(batch_op.f("ix_calls_disposition"), ["disposition"], unique=False)
        batch_op.create_index(batch_op.f("ix_calls_started_at"), ["started_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_calls_user_id"), ["user_id"], unique=False)

    op.create_table(
        "numbers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("number", sa.String(length=21), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("greeting_text", sa.String(length=2000), nullable=False),
        sa.Column("extension_dialing", sa.Boolean(), nullable=False),
        sa.Column("default_destination", sa.JSON(), nullable=False),
        sa.Column("no_answer_destination", sa.JSON(), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_numbers")),
        sa.UniqueConstraint("number", name=op.f("uq_numbers_number")),
    )


def downgrade() -> None:
    op.drop_table("numbers")
    with op.batch_alter_table("calls", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_calls_user_id"))
        batch_op.drop_index(batch_op.f("ix_calls_started_at"))
        batch_op.drop_index(batch_op.f("ix_calls_disposition"))
        batch_op.drop_index(batch_op.f("ix_calls_direction"))

    op.drop_table("calls")
