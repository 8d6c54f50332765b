"""ACD: queues and members, the queue log, presence history, per-status forwarding.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 09:30:29.872532
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "presence_history",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=True),
        sa.Column("message", sa.String(length=200), nullable=True),
        sa.Column("activity", sa.String(length=16), nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_presence_history")),
    )
    with op.batch_alter_table("presence_history", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_presence_history_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_presence_history_user_id"), ["user_id"], unique=False)

    op.create_table(
        "queue_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("wait_seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queue_log")),
    )
    with op.batch_alter_table("queue_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_queue_log_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_queue_log_call_id"), ["call_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_queue_log_queue_id"), ["queue_id"], unique=False)

    op.create_table(
        "forwarding",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_forwarding_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_forwarding")),
    )
    op.create_table(
        "queues",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("strategy", sa.String(length=16), nullable=False),
        sa.Column("ring_timeout", sa.Integer(), nullable=False),
        sa.Column("wrap_up_time", sa.Integer(), nullable=False),
        sa.Column("max_wait", sa.Integer(), nullable=False),
        sa.Column("max_length", sa.Integer(), nullable=False),
        sa.Column("when_no_agents", sa.String(length=16), nullable=False),
        sa.Column("overflow", sa.JSON(), nullable=False),
        sa.Column("hold_music_prompt_id", sa.Integer(), nullable=True),
        sa.Column("announce_interval", sa.Integer(), nullable=False),
        sa.Column("exit_key", sa.String(length=1), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["hold_music_prompt_id"],
            ["prompts.id"],
            name=op.f("fk_queues_hold_music_prompt_id_prompts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_queues")),
        sa.UniqueConstraint("name", name=op.f("uq_queues_name")),
    )
    with op.batch_alter_table("queues", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_queues_hold_music_prompt_id"), ["hold_music_prompt_id"], unique=False
        )

    op.create_table(
        "queue_members",
        sa.Column("queue_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["queue_id"],
            ["queues.id"],
            name=op.f("fk_queue_members_queue_id_queues"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_queue_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("queue_id", "user_id", name=op.f("pk_queue_members")),
    )
    with op.batch_alter_table("queue_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_queue_members_user_id"), ["user_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("queue_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_members_user_id"))

    op.drop_table("queue_members")
    with op.batch_alter_table("queues", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queues_hold_music_prompt_id"))

    op.drop_table("queues")
    op.drop_table("forwarding")
    with op.batch_alter_table("queue_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_log_queue_id"))
        batch_op.drop_index(batch_op.f("ix_queue_log_call_id"))
        batch_op.drop_index(batch_op.f("ix_queue_log_at"))

    op.drop_table("queue_log")
    with op.batch_alter_table("presence_history", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_presence_history_user_id"))
        batch_op.drop_index(batch_op.f("ix_presence_history_at"))

    op.drop_table("presence_history")
