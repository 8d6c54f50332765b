"""Chat channels: channels and members, dialogs, messages, offers, the reply outbox, canned
responses, the blocklist.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 10:12:03.941376
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

# Chained after 0005; the branch adding 0006 is re-chained at merge.
revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "blocklist",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("entry", sa.String(length=320), nullable=False),
        sa.Column("action", sa.String(length=8), nullable=False),
        sa.Column("note", sa.String(length=200), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_blocklist")),
        sa.UniqueConstraint("entry", name=op.f("uq_blocklist_entry")),
    )
    op.create_table(
        "canned_responses",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("category", sa.String(length=100), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_canned_responses")),
    )
    with op.batch_alter_table("canned_responses", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_canned_responses_category"), ["category"], unique=False
        )

    op.create_table(
        "channels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("distribution", sa.String(length=16), nullable=False),
        sa.Column("check_availability", sa.Boolean(), nullable=False),
        sa.Column("max_open_dialogs", sa.Integer(), nullable=True),
        sa.Column("exclude_answered", sa.Boolean(), nullable=False),
        sa.Column("exclude_waiting", sa.Boolean(), nullable=False),
        sa.Column("idle_seconds", sa.Integer(), nullable=False),
        sa.Column("reply_url", sa.String(length=2000), nullable=True),
        sa.Column("secret", sa.String(length=64), nullable=False),
        sa.Column("working_hours", sa.JSON(), nullable=True),
        sa.Column("off_hours_reply", sa.Text(), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_channels")),
        sa.UniqueConstraint("name", name=op.f("uq_channels_name")),
    )
    op.create_table(
        "channel_members",
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_channel_members_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_channel_members_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("channel_id", "user_id", name=op.f("pk_channel_members")),
    )
    with op.batch_alter_table("channel_members", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_channel_members_user_id"), ["user_id"], unique=False)

    op.create_table(
        "dialogs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel_id", sa.Integer(), nullable=False),
        sa.Column("customer_id", sa.String(length=200), nullable=False),
        sa.Column("customer_name", sa.String(length=200), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("spam", sa.Boolean(), nullable=False),
        sa.Column("assignee_id", sa.Integer(), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("queued_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("assigned_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("first_assigned_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("idle_deadline", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("tried", sa.JSON(), nullable=False),
        sa.Column("first_response_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("first_response_by", sa.Integer(), nullable=True),
        sa.Column("last_message_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("closed_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("closed_by", sa.String(length=32), nullable=True),
        sa.Column("rating", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["assignee_id"],
            ["users.id"],
            name=op.f("fk_dialogs_assignee_id_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["channel_id"],
            ["channels.id"],
            name=op.f("fk_dialogs_channel_id_channels"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dialogs")),
    )
    with op.batch_alter_table("dialogs", schema=None) as batch_op:
        batch_op.create_index("ix_dialogs_assignee_state", ["assignee_id", "state"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_dialogs_idle_deadline"), ["idle_deadline"], unique=False
        )
        batch_op.create_index("ix_dialogs_state_queued", ["state", "queued_at"], unique=False)
        batch_op.create_index(
            "uq_dialogs_open_customer",
            ["channel_id", "customer_id"],
            unique=True,
            sqlite_where=sa.text("state != 'closed'"),
            postgresql_where=sa.text("state != 'closed'"),
        )

    op.create_table(
        "chat_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dialog_id", sa.Integer(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("author_id", sa.Integer(), nullable=True),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dialog_id"],
            ["dialogs.id"],
            name=op.f("fk_chat_messages_dialog_id_dialogs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_messages")),
    )
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_chat_messages_dialog_id"), ["dialog_id"], unique=False)

    op.create_table(
        "dialog_offers",
        sa.Column("dialog_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dialog_id"],
            ["dialogs.id"],
            name=op.f("fk_dialog_offers_dialog_id_dialogs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_dialog_offers_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dialog_id", "user_id", name=op.f("pk_dialog_offers")),
    )
    with op.batch_alter_table("dialog_offers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_dialog_offers_user_id"), ["user_id"], unique=False)

    op.create_table(
        "chat_outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("dialog_id", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.String(length=500), nullable=True),
        sa.Column("delivered_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["dialog_id"],
            ["dialogs.id"],
            name=op.f("fk_chat_outbox_dialog_id_dialogs"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"],
            ["chat_messages.id"],
            name=op.f("fk_chat_outbox_message_id_chat_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chat_outbox")),
        sa.UniqueConstraint("message_id", name=op.f("uq_chat_outbox_message_id")),
    )
    with op.batch_alter_table("chat_outbox", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chat_outbox_delivered_at"), ["delivered_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("chat_outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chat_outbox_delivered_at"))

    op.drop_table("chat_outbox")
    with op.batch_alter_table("dialog_offers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_dialog_offers_user_id"))

    op.drop_table("dialog_offers")
    with op.batch_alter_table("chat_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chat_messages_dialog_id"))

    op.drop_table("chat_messages")
    with op.batch_alter_table("dialogs", schema=None) as batch_op:
        batch_op.drop_index(
            "uq_dialogs_open_customer",
            sqlite_where=sa.text("state != 'closed'"),
            postgresql_where=sa.text("state != 'closed'"),
        )
        batch_op.drop_index("ix_dialogs_state_queued")
        batch_op.drop_index(batch_op.f("ix_dialogs_idle_deadline"))
        batch_op.drop_index("ix_dialogs_assignee_state")

    op.drop_table("dialogs")
    with op.batch_alter_table("channel_members", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_channel_members_user_id"))

    op.drop_table("channel_members")
    op.drop_table("channels")
    with op.batch_alter_table("canned_responses", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_canned_responses_category"))

    op.drop_table("canned_responses")
    op.drop_table("blocklist")
