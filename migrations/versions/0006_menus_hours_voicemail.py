"""IVR: menus, business hours per number, voicemail boxes and messages (issue 5).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25 09:45:41.311074
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import core.db

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "menus",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("prompt_text", sa.String(length=2000), nullable=True),
        sa.Column("prompt_id", sa.Integer(), nullable=True),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("timeout_s", sa.Float(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("invalid_prompt_text", sa.String(length=2000), nullable=True),
        sa.Column("invalid_prompt_id", sa.Integer(), nullable=True),
        sa.Column("timeout_prompt_text", sa.String(length=2000), nullable=True),
        sa.Column("timeout_prompt_id", sa.Integer(), nullable=True),
        sa.Column("final_destination", sa.JSON(), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["invalid_prompt_id"], ["prompts.id"], name=op.f("fk_menus_invalid_prompt_id_prompts")
        ),
        sa.ForeignKeyConstraint(
            ["prompt_id"], ["prompts.id"], name=op.f("fk_menus_prompt_id_prompts")
        ),
        sa.ForeignKeyConstraint(
            ["timeout_prompt_id"], ["prompts.id"], name=op.f("fk_menus_timeout_prompt_id_prompts")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_menus")),
    )
    with op.batch_alter_table("menus", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_menus_invalid_prompt_id"), ["invalid_prompt_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_menus_prompt_id"), ["prompt_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_menus_timeout_prompt_id"), ["timeout_prompt_id"], unique=False
        )

    op.create_table(
        "voicemail_boxes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("owner_type", sa.String(length=16), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("greeting_text", sa.String(length=2000), nullable=True),
        sa.Column("greeting_prompt_id", sa.Integer(), nullable=True),
        sa.Column("max_seconds", sa.Float(), nullable=False),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["greeting_prompt_id"],
            ["prompts.id"],
            name=op.f("fk_voicemail_boxes_greeting_prompt_id_prompts"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voicemail_boxes")),
        sa.UniqueConstraint("owner_type", "owner_id", name=op.f("uq_voicemail_boxes_owner_type")),
    )
    with op.batch_alter_table("voicemail_boxes", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_voicemail_boxes_greeting_prompt_id"),
            ["greeting_prompt_id"],
            unique=False,
        )

    op.create_table(
        "number_hours",
        sa.Column("number_id", sa.Integer(), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("weekly", sa.JSON(), nullable=False),
        sa.Column("holidays", sa.JSON(), nullable=False),
        sa.Column("off_hours_prompt_text", sa.String(length=2000), nullable=True),
        sa.Column("off_hours_prompt_id", sa.Integer(), nullable=True),
        sa.Column("off_hours_destination", sa.JSON(), nullable=False),
        sa.Column("updated_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["number_id"],
            ["numbers.id"],
            name=op.f("fk_number_hours_number_id_numbers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["off_hours_prompt_id"],
            ["prompts.id"],
            name=op.f("fk_number_hours_off_hours_prompt_id_prompts"),
        ),
        sa.PrimaryKeyConstraint("number_id", name=op.f("pk_number_hours")),
    )
    with op.batch_alter_table("number_hours", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_number_hours_off_hours_prompt_id"), ["off_hours_prompt_id"], unique=False
        )

    op.create_table(
        "voicemail_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("box_id", sa.Integer(), nullable=False),
        sa.Column("caller", sa.String(length=128), nullable=False),
        sa.Column("call_id", sa.Integer(), nullable=True),
        sa.Column("file", sa.String(length=100), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("heard_at", core.db.UtcDateTime(timezone=True), nullable=True),
        sa.Column("created_at", core.db.UtcDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["box_id"],
            ["voicemail_boxes.id"],
            name=op.f("fk_voicemail_messages_box_id_voicemail_boxes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_voicemail_messages")),
    )
    with op.batch_alter_table("voicemail_messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_voicemail_messages_box_id"), ["box_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_voicemail_messages_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("voicemail_messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voicemail_messages_created_at"))
        batch_op.drop_index(batch_op.f("ix_voicemail_messages_box_id"))

    op.drop_table("voicemail_messages")
    with op.batch_alter_table("number_hours", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_number_hours_off_hours_prompt_id"))

    op.drop_table("number_hours")
    with op.batch_alter_table("voicemail_boxes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_voicemail_boxes_greeting_prompt_id"))

    op.drop_table("voicemail_boxes")
    with op.batch_alter_table("menus", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_menus_timeout_prompt_id"))
        batch_op.drop_index(batch_op.f("ix_menus_prompt_id"))
        batch_op.drop_index(batch_op.f("ix_menus_invalid_prompt_id"))

    op.drop_table("menus")
